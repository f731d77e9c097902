/*
 * Backend "fentry": the same as the kprobe backend on BTF trampolines
 * (fentry/fexit), which see a function's arguments and its return value
 * together.  The FN_* names are the kernel's own names for each function on
 * the running kernel (rawsys.trace.kernel.facts.FUNCTIONS).
 */
#include "prelude.bpf.h"
#include "maps.bpf.h"
#include "files.bpf.h"
#include "cmsg.bpf.h"
#include "scm.bpf.h"

struct socket;
struct msghdr;
struct scm_cookie;
struct file;

/* bcc pastes the function name into the program's name: expand FN_* first. */
#define FENTRY(fn, args...) KFUNC_PROBE(fn, ##args)
#define FEXIT(fn, args...) KRETFUNC_PROBE(fn, ##args)

FEXIT(FN_SCM_SEND, struct socket *sock, struct msghdr *msg, struct scm_cookie *scm, int ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (calls.lookup(&tid))
        scm_send_done((u64)msg, (u64)scm, ret);
    return 0;
}

FENTRY(FN_SCM_DETACH_FDS, struct msghdr *msg, struct scm_cookie *scm)
{
    scm_detach_begin((u64)msg, (u64)scm);
    return 0;
}

FEXIT(FN_SCM_DETACH_FDS, struct msghdr *msg, struct scm_cookie *scm)
{
    scm_detach_done();
    return 0;
}

FEXIT(FN_RECEIVE_FD, struct file *file, int *ufd, unsigned int o_flags, int ret)
{
    scm_received_fd((u64)file, o_flags, ret);
    return 0;
}
