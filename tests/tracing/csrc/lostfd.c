/*
 * Each way the kernel drops fds in flight, reproduced: the tracer's tests
 * run it and check that the loss is reported with its cause.
 *
 *   lostfd CAUSE    the parent (sender) sends the read end of a new pipe to
 *                   its child (receiver) over an AF_UNIX socketpair, then
 *                   the child loses it:
 *     ctrunc        recvmsg with room for 1 of the 2 fds sent (SOCK_DGRAM)
 *     nocontrol     recvmsg without a control buffer (SOCK_DGRAM)
 *     read          read() takes the message (SOCK_DGRAM)
 *     recv          recv() takes it (SOCK_STREAM)
 *     zero          the parent sends 0 data bytes on SOCK_STREAM: nobody gets it
 *     close         the child closes its socket with the message queued
 *     exit          the child exits with the message queued
 *     emfile        the child's fd table is full (RLIMIT_NOFILE) when it receives 2 fds
 *     exec          the child receives with MSG_CMSG_CLOEXEC, then execs /bin/true
 *   and one that loses nothing:
 *     hold          the child receives properly, but only once its stdin is at end
 *                   of file (in flight until then: the test decides how long)
 *
 * Prints "sender pid P fd F ino I" for each fd sent (I: the pipe's inode)
 * and "receiver pid P" (the child), so the tests can compare with the trace.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/* sendmsg of nfds fds with len data bytes. */
static void send_fds(int sock, const int *fds, int nfds, size_t len)
{
    char data[1] = { 'x' };
    struct iovec io = { .iov_base = data, .iov_len = len };
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    struct cmsghdr *cmsg;

    memset(&msg, 0, sizeof(msg));
    memset(&u, 0, sizeof(u));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
    if (sendmsg(sock, &msg, 0) < 0)
        die("sendmsg");
}

/* recvmsg with room for room fds (0: no control buffer); returns msg_flags. */
static int recv_fds(int sock, int room, int flags)
{
    char data[1];
    struct iovec io = { .iov_base = data, .iov_len = sizeof(data) };
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    if (room) {
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_LEN(room * sizeof(int)); /* room for exactly that many */
    }
    if (recvmsg(sock, &msg, flags) < 0)
        die("recvmsg");
    return msg.msg_flags;
}

static void child(const char *cause, int sock)
{
    char buf[16];

    printf("receiver pid %d\n", (int)getpid());
    fflush(stdout);
    if (!strcmp(cause, "ctrunc")) {
        recv_fds(sock, 1, 0);
    } else if (!strcmp(cause, "nocontrol")) {
        recv_fds(sock, 0, 0);
    } else if (!strcmp(cause, "read")) {
        if (read(sock, buf, sizeof(buf)) < 0)
            die("read");
    } else if (!strcmp(cause, "recv")) {
        if (recv(sock, buf, sizeof(buf), 0) < 0)
            die("recv");
    } else if (!strcmp(cause, "zero")) {
        /* nothing arrives */
    } else if (!strcmp(cause, "close")) {
        close(sock);
    } else if (!strcmp(cause, "exit")) {
        _exit(0);
    } else if (!strcmp(cause, "emfile")) {
        /* One slot left under the limit: the first fd fits, the second does not. */
        struct rlimit rl = { .rlim_cur = 16, .rlim_max = 16 };
        int fd;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die("setrlimit");
        while ((fd = dup(0)) >= 0 && fd < 15)
            ;
        if (fd < 0)
            die("dup");
        close(fd); /* fd 15 free: one of the two fits */
        recv_fds(sock, 2, 0);
    } else if (!strcmp(cause, "hold")) {
        while (read(0, buf, sizeof(buf)) > 0)
            ;
        recv_fds(sock, 1, 0);
    } else if (!strcmp(cause, "exec")) {
        recv_fds(sock, 1, MSG_CMSG_CLOEXEC);
        execl("/bin/true", "true", (char *)NULL);
        die("execl");
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    int sv[2], p[2], fds[2], nfds = 1, type = SOCK_DGRAM, ready[2];
    const char *cause;
    pid_t pid;
    char c;

    if (argc != 2) {
        fprintf(stderr, "usage: lostfd ctrunc|nocontrol|read|recv|zero|close|exit|emfile|exec\n");
        return 2;
    }
    cause = argv[1];
    if (!strcmp(cause, "recv") || !strcmp(cause, "zero"))
        type = SOCK_STREAM;
    if (!strcmp(cause, "ctrunc") || !strcmp(cause, "emfile"))
        nfds = 2;
    if (socketpair(AF_UNIX, type, 0, sv) < 0 || pipe(p) < 0 || pipe(ready) < 0)
        die("socketpair/pipe");
    fds[0] = p[0];
    fds[1] = p[1];
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sv[0]);
        close(p[0]);
        close(p[1]);
        close(ready[1]);
        if (read(ready[0], &c, 1) != 1) /* the message is queued */
            die("read ready");
        child(cause, sv[1]);
    }
    close(sv[1]);
    close(ready[0]);
    for (int i = 0; i < nfds; i++) {
        struct stat st;
        if (fstat(fds[i], &st) < 0)
            die("fstat");
        printf("sender pid %d fd %d ino %lu\n", (int)getpid(), fds[i], (unsigned long)st.st_ino);
    }
    fflush(stdout);
    send_fds(sv[0], fds, nfds, strcmp(cause, "zero") ? 1 : 0);
    if (write(ready[1], "g", 1) != 1)
        die("write ready");
    if (waitpid(pid, NULL, 0) < 0)
        die("waitpid");
    return 0;
}
