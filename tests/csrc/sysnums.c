/* Prints this machine's system-call numbers from <sys/syscall.h> and the
 * socketcall sub-call numbers of <linux/net.h>, as "NAME NUMBER" lines. */
#define _GNU_SOURCE
#include <linux/net.h>
#include <stdio.h>
#include <sys/syscall.h>

#define NR(name) printf("%s %ld\n", #name, (long)SYS_##name)
#define SUB(name) printf("%s %d\n", #name, name)

int main(void)
{
    NR(read); NR(write); NR(close); NR(getpid); NR(socket); NR(socketpair); NR(bind);
    NR(connect); NR(listen); NR(accept); NR(accept4); NR(shutdown); NR(getsockname);
    NR(getpeername); NR(sendto); NR(recvfrom); NR(sendmsg); NR(recvmsg); NR(sendmmsg);
    NR(recvmmsg); NR(setsockopt); NR(getsockopt); NR(pipe2); NR(bpf); NR(perf_event_open);
    NR(membarrier);

    SUB(SYS_SOCKET); SUB(SYS_BIND); SUB(SYS_CONNECT); SUB(SYS_LISTEN); SUB(SYS_ACCEPT);
    SUB(SYS_GETSOCKNAME); SUB(SYS_GETPEERNAME); SUB(SYS_SOCKETPAIR); SUB(SYS_SEND);
    SUB(SYS_RECV); SUB(SYS_SENDTO); SUB(SYS_RECVFROM); SUB(SYS_SHUTDOWN);
    SUB(SYS_SETSOCKOPT); SUB(SYS_GETSOCKOPT); SUB(SYS_SENDMSG); SUB(SYS_RECVMSG);
    SUB(SYS_ACCEPT4); SUB(SYS_RECVMMSG); SUB(SYS_SENDMMSG);
    return 0;
}
