/* The classic send_fd / recv_fd pair of cmsg(3), with the control buffer in a
 * union for cmsghdr's alignment, shared by the benchmarks' C loops: one byte of
 * data and one fd per message. */
#ifndef RAWSYS_SEND_RECV_FD_H
#define RAWSYS_SEND_RECV_FD_H

#include <string.h>
#include <sys/socket.h>

/* Returns what sendmsg returns (1 on success). */
static int send_fd(int fd, int fd_to_send)
{
    struct msghdr msg;
    char iobuf[1] = { 'x' };
    struct iovec io = { .iov_base = iobuf, .iov_len = sizeof(iobuf) };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr cmsg; } u;
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
    return (int)sendmsg(fd, &msg, 0);
}

/* The fd of the first SCM_RIGHTS message, or -1. */
static int recv_fd(int fd)
{
    struct msghdr msg;
    char iobuf[1];
    struct iovec io = { .iov_base = iobuf, .iov_len = sizeof(iobuf) };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr cmsg; } u;
    struct cmsghdr *c;
    int got;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    if (recvmsg(fd, &msg, 0) != 1)
        return -1;
    c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return -1;
    memcpy(&got, CMSG_DATA(c), sizeof(int));
    return got;
}

#endif
