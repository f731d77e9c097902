/* The C end of tests/test_c_interop.py: passes descriptors over a Unix socket
 * it inherited from the test, so Python and C can be checked against each other.
 *
 *   fdpass send SOCK N     make N pipes, send their write ends in one SCM_RIGHTS
 *                          message (N == 1: one int in a union-aligned buffer;
 *                          N > 1: an int array memcpy'd into CMSG_DATA), close
 *                          them, then print what arrives on each read end
 *   fdpass sendfile SOCK PATH
 *                          open PATH read-only and send that descriptor
 *   fdpass recv SOCK MAX   receive one message with room for MAX descriptors,
 *                          write "C<i>" through the i-th one, print what came
 *
 * Exit status 0 on success; any failure prints perror text and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 64

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* One descriptor, the control buffer in a union so it is aligned for cmsghdr. */
static int send_one_fd(int sock, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    char byte = '1';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg;

    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);

    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    *(int *)CMSG_DATA(cmsg) = fd;
    return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

/* Several descriptors in one SCM_RIGHTS header, copied in as an array. */
static int send_fd_array(int sock, const int *fds, int count)
{
    char *control = calloc(1, CMSG_SPACE(sizeof(int) * count));
    char data[] = "N";
    struct iovec iov = { .iov_base = data, .iov_len = 1 };
    struct msghdr msg;
    int result;

    if (control == NULL)
        return -1;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);

    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
    result = sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
    free(control);
    return result;
}

static int send_mode(int sock, int count)
{
    int readers[MAX_FDS], writers[MAX_FDS];

    if (count < 1 || count > MAX_FDS) {
        fprintf(stderr, "count out of range\n");
        return 1;
    }
    for (int i = 0; i < count; i++) {
        int p[2];
        if (pipe(p) < 0)
            die("pipe");
        readers[i] = p[0];
        writers[i] = p[1];
    }
    if ((count == 1 ? send_one_fd(sock, writers[0]) : send_fd_array(sock, writers, count)) < 0)
        die("sendmsg");
    /* The fds are in flight; our copies can go, so each pipe ends when Python closes it. */
    for (int i = 0; i < count; i++)
        close(writers[i]);
    for (int i = 0; i < count; i++) {
        char buf[256];
        size_t used = 0;
        ssize_t n;
        while ((n = read(readers[i], buf + used, sizeof(buf) - 1 - used)) > 0)
            used += (size_t)n;
        if (n < 0)
            die("read");
        buf[used] = '\0';
        printf("pipe %d: %s\n", i, buf);
        close(readers[i]);
    }
    return 0;
}

static int sendfile_mode(int sock, const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open");
    if (send_one_fd(sock, fd) < 0)
        die("sendmsg");
    close(fd);
    printf("sent fd %d\n", fd);
    return 0;
}

static int recv_mode(int sock, int max)
{
    char data[64];
    struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
    struct msghdr msg;
    char *control;
    int total = 0;

    if (max < 1 || max > MAX_FDS) {
        fprintf(stderr, "max out of range\n");
        return 1;
    }
    control = calloc(1, CMSG_SPACE(sizeof(int) * max));
    if (control == NULL)
        die("calloc");
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * max);

    ssize_t n = recvmsg(sock, &msg, 0);
    if (n < 0)
        die("recvmsg");
    printf("data %.*s flags %d\n", (int)n, data, msg.msg_flags);
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL;
         cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue;
        int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int fds[MAX_FDS];
        memcpy(fds, CMSG_DATA(cmsg), sizeof(int) * count);
        for (int i = 0; i < count; i++) {
            char text[16];
            int len = snprintf(text, sizeof(text), "C%d", total);
            if (write(fds[i], text, (size_t)len) != len)
                die("write");
            close(fds[i]);
            total++;
        }
    }
    printf("received %d\n", total);
    free(control);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fdpass send|sendfile|recv SOCK ARG\n");
        return 2;
    }
    int sock = atoi(argv[2]);
    if (strcmp(argv[1], "send") == 0)
        return send_mode(sock, atoi(argv[3]));
    if (strcmp(argv[1], "sendfile") == 0)
        return sendfile_mode(sock, argv[3]);
    if (strcmp(argv[1], "recv") == 0)
        return recv_mode(sock, atoi(argv[3]));
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
