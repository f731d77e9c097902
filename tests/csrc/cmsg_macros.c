/* For each size_t read from stdin (decimal, one a line) prints
 *   CMSG_ALIGN(n) CMSG_LEN(n) CMSG_SPACE(n)
 * computed by <sys/socket.h>'s macros, in size_t arithmetic as C does it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/socket.h>

int main(void)
{
    unsigned long long value;

    while (scanf("%llu", &value) == 1) {
        size_t n = (size_t)value;
        printf("%zu %zu %zu\n", (size_t)CMSG_ALIGN(n), (size_t)CMSG_LEN(n),
               (size_t)CMSG_SPACE(n));
    }
    return 0;
}
