/* Prints the C side of rawsys's ABI: sizes and offsets of the structures and
 * the values of the constants, one fact per line, for tests/test_c_abi.py.
 *
 *   struct NAME SIZE ALIGN
 *   field NAME.FIELD OFFSET SIZE
 *   const NAME VALUE
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>

#define STRUCT(type) \
    printf("struct %s %zu %zu\n", #type, sizeof(struct type), _Alignof(struct type))
#define FIELD(type, member)                                       \
    printf("field %s.%s %zu %zu\n", #type, #member,               \
           offsetof(struct type, member), sizeof(((struct type *)0)->member))
#define CONST(name) printf("const %s %lld\n", #name, (long long)(name))

int main(void)
{
    STRUCT(iovec);
    FIELD(iovec, iov_base);
    FIELD(iovec, iov_len);

    STRUCT(msghdr);
    FIELD(msghdr, msg_name);
    FIELD(msghdr, msg_namelen);
    FIELD(msghdr, msg_iov);
    FIELD(msghdr, msg_iovlen);
    FIELD(msghdr, msg_control);
    FIELD(msghdr, msg_controllen);
    FIELD(msghdr, msg_flags);

    STRUCT(cmsghdr);
    FIELD(cmsghdr, cmsg_len);
    FIELD(cmsghdr, cmsg_level);
    FIELD(cmsghdr, cmsg_type);

    STRUCT(mmsghdr);
    FIELD(mmsghdr, msg_hdr);
    FIELD(mmsghdr, msg_len);

    STRUCT(ucred);
    FIELD(ucred, pid);
    FIELD(ucred, uid);
    FIELD(ucred, gid);

    STRUCT(sockaddr);
    FIELD(sockaddr, sa_family);
    FIELD(sockaddr, sa_data);

    STRUCT(sockaddr_un);
    FIELD(sockaddr_un, sun_family);
    FIELD(sockaddr_un, sun_path);

    STRUCT(in_addr);
    FIELD(in_addr, s_addr);

    STRUCT(sockaddr_in);
    FIELD(sockaddr_in, sin_family);
    FIELD(sockaddr_in, sin_port);
    FIELD(sockaddr_in, sin_addr);
    FIELD(sockaddr_in, sin_zero);

    STRUCT(timespec);
    FIELD(timespec, tv_sec);
    FIELD(timespec, tv_nsec);

    CONST(AF_UNSPEC); CONST(AF_UNIX); CONST(AF_LOCAL); CONST(AF_INET); CONST(AF_INET6);
    CONST(AF_NETLINK); CONST(PF_UNIX); CONST(PF_INET);

    CONST(SOCK_STREAM); CONST(SOCK_DGRAM); CONST(SOCK_RAW); CONST(SOCK_SEQPACKET);
    CONST(SOCK_NONBLOCK); CONST(SOCK_CLOEXEC);

    CONST(SOL_SOCKET); CONST(SO_TYPE); CONST(SO_ERROR); CONST(SO_RCVBUF); CONST(SO_SNDBUF);
    CONST(SO_PASSCRED); CONST(SO_PEERCRED); CONST(SO_PASSSEC);
#ifdef SO_PASSPIDFD
    CONST(SO_PASSPIDFD);
#endif
#ifdef SO_PEERPIDFD
    CONST(SO_PEERPIDFD);
#endif

    CONST(SCM_RIGHTS); CONST(SCM_CREDENTIALS);
#ifdef SCM_SECURITY
    CONST(SCM_SECURITY);
#endif
#ifdef SCM_PIDFD
    CONST(SCM_PIDFD);
#endif

    CONST(MSG_OOB); CONST(MSG_PEEK); CONST(MSG_DONTROUTE); CONST(MSG_CTRUNC);
    CONST(MSG_TRUNC); CONST(MSG_DONTWAIT); CONST(MSG_EOR); CONST(MSG_WAITALL);
    CONST(MSG_CONFIRM); CONST(MSG_ERRQUEUE); CONST(MSG_NOSIGNAL); CONST(MSG_MORE);
    CONST(MSG_CMSG_CLOEXEC); CONST(MSG_WAITFORONE);

    CONST(SHUT_RD); CONST(SHUT_WR); CONST(SHUT_RDWR);

    CONST(IPPROTO_IP); CONST(IPPROTO_UDP); CONST(IPPROTO_TCP); CONST(IP_TTL);
    CONST(IP_RECVTTL); CONST(INADDR_LOOPBACK); CONST(INADDR_ANY);

    CONST(O_CLOEXEC); CONST(O_NONBLOCK); CONST(O_RDONLY); CONST(O_WRONLY); CONST(O_RDWR);
    CONST(FD_CLOEXEC);
    return 0;
}
