/* Walks control buffers with CMSG_FIRSTHDR/CMSG_NXTHDR and prints what it finds.
 *
 * Input, one buffer a line:  MISALIGN CONTROLLEN HEX
 *   the control buffer starts MISALIGN bytes past a 16-byte boundary and holds
 *   CONTROLLEN bytes, given as 2*CONTROLLEN hex digits ("-" when empty).
 * Output, one line per buffer:  W o1 o2 ... ; N r0 r1 ...
 *   W: offsets (from msg_control) of the headers a FIRSTHDR/NXTHDR walk visits;
 *   N: for every start offset s = 0, 4, 8, ... with s + sizeof(struct cmsghdr)
 *      <= CONTROLLEN, the offset CMSG_NXTHDR returns for a header at s, "x" for NULL.
 *
 * Built with -O2, CMSG_NXTHDR is glibc's inline __cmsg_nxthdr from
 * <bits/socket.h>.  Built with -DCALL_LIBC it calls libc's out-of-line
 * __cmsg_nxthdr through a pointer, so the compiler cannot inline it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_CONTROL 65536
#define MAX_WALK 100000

#ifdef CALL_LIBC
static struct cmsghdr *(*volatile next_header)(struct msghdr *, struct cmsghdr *) =
    __cmsg_nxthdr;
#define NEXT(msg, cmsg) next_header((msg), (cmsg))
#else
#define NEXT(msg, cmsg) CMSG_NXTHDR((msg), (cmsg))
#endif

static void print_offset(const unsigned char *control, const struct cmsghdr *cmsg)
{
    if (cmsg == NULL)
        fputs(" x", stdout);
    else
        printf(" %td", (const unsigned char *)cmsg - control);
}

int main(void)
{
    static _Alignas(16) unsigned char storage[MAX_CONTROL + 16];
    static char hex[2 * MAX_CONTROL + 2];
    unsigned misalign;
    size_t controllen;

    while (scanf("%u %zu %131073s", &misalign, &controllen, hex) == 3) {
        if (misalign > 15 || controllen > MAX_CONTROL ||
            (controllen > 0 && strlen(hex) != 2 * controllen)) {
            fprintf(stderr, "bad input line\n");
            return 2;
        }
        unsigned char *control = storage + misalign;
        for (size_t i = 0; i < controllen; i++) {
            unsigned byte;
            sscanf(hex + 2 * i, "%2x", &byte);
            control[i] = (unsigned char)byte;
        }

        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_control = control;
        msg.msg_controllen = controllen;

        fputs("W", stdout);
        long steps = 0;
        for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL;
             cmsg = NEXT(&msg, cmsg)) {
            print_offset(control, cmsg);
            if (++steps == MAX_WALK) {
                fputs(" loop", stdout);
                break;
            }
        }
        fputs(" ; N", stdout);
        for (size_t start = 0; start + sizeof(struct cmsghdr) <= controllen; start += 4)
            print_offset(control, NEXT(&msg, (struct cmsghdr *)(control + start)));
        putchar('\n');
    }
    return 0;
}
