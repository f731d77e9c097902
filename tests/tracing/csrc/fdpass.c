/*
 * The classic send_fd/recv_fd pair of cmsg(3), as the tracer's tests run them.
 *
 *   fdpass fork PATH   the child opens PATH and sends the fd over an AF_UNIX
 *                      SOCK_DGRAM socketpair; the parent receives it, reads
 *                      it and prints "I got fd N".
 *   fdpass loop COUNT  one process sends one pipe fd COUNT times to itself and
 *                      closes every fd it receives.
 * Each side prints "<role> pid P fd F" so the tests can compare with the trace.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static int send_fd(int fd, int fd_to_send)
{
    struct msghdr msg;
    char iobuf[1] = { 'x' };
    struct iovec io = { .iov_base = iobuf, .iov_len = sizeof(iobuf) };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr cmsg;
    } u;

    memset(&msg, 0, sizeof(msg));
    memset(&u, 0, sizeof(u));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    u.cmsg.cmsg_level = SOL_SOCKET;
    u.cmsg.cmsg_type = SCM_RIGHTS;
    u.cmsg.cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(&u.cmsg), &fd_to_send, sizeof(int));
    return sendmsg(fd, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int fd)
{
    struct msghdr msg;
    char iobuf[1];
    struct iovec io = { .iov_base = iobuf, .iov_len = sizeof(iobuf) };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr cmsg;
    } u;
    int got;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    if (recvmsg(fd, &msg, 0) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return -1;
    memcpy(&got, CMSG_DATA(c), sizeof(int));
    return got;
}

int main(int argc, char **argv)
{
    int sv[2];
    if (argc != 3) {
        fprintf(stderr, "usage: %s fork PATH | loop COUNT\n", argv[0]);
        return 2;
    }
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    if (strcmp(argv[1], "fork") == 0) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(sv[0]);
            int fd = open(argv[2], O_RDONLY);
            if (fd < 0 || send_fd(sv[1], fd) < 0) {
                perror("child");
                _exit(1);
            }
            printf("sender pid %d fd %d\n", (int)getpid(), fd);
            fflush(stdout);
            close(fd);
            _exit(0);
        }
        close(sv[1]);
        int fd = recv_fd(sv[0]);
        if (fd < 0) {
            perror("recv_fd");
            return 1;
        }
        char buf[256];
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = 0;
        printf("receiver pid %d fd %d\n", (int)getpid(), fd);
        printf("I got fd %d and data: %s\n", fd, buf);
        close(fd);
        int status = 0;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    if (strcmp(argv[1], "loop") == 0) {
        long count = atol(argv[2]);
        int p[2];
        if (pipe(p) < 0) {
            perror("pipe");
            return 1;
        }
        for (long i = 0; i < count; i++) {
            if (send_fd(sv[0], p[0]) < 0) {
                perror("send_fd");
                return 1;
            }
            int fd = recv_fd(sv[1]);
            if (fd < 0) {
                perror("recv_fd");
                return 1;
            }
            close(fd);
        }
        printf("sender pid %d fd %d\n", (int)getpid(), p[0]);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
