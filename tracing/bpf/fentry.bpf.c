/*
 * Backend "fentry": the same as the kprobe backend on BTF trampolines
 * (fentry/fexit), which see a function's arguments and its return value
 * together.  FN_* are the running kernel's names for the functions that
 * play each part (rawsys.trace.kernel.facts.FUNCTIONS), chosen by their
 * BTF prototypes; the programs declare no arguments and read ctx[] at the
 * positions the prelude gives (ARG_*; NARGS_* is where fexit finds the
 * return value), so the trampoline and the program agree on every kernel.
 */
#include "prelude.bpf.h"
#include "maps.bpf.h"
#include "files.bpf.h"
#include "cmsg.bpf.h"
#include "causes.bpf.h"
#include "scm.bpf.h"

/* bcc pastes the function name into the program's name: expand FN_* first. */
#define FENTRY(fn) KFUNC_PROBE(fn)
#define FEXIT(fn) KRETFUNC_PROBE(fn)

FEXIT(FN_SCM_SEND)
{
    scm_send_done(ctx[ARG_SCM_SEND_MSG], ctx[ARG_SCM_SEND_SCM], (s64)(int)ctx[NARGS_SCM_SEND]);
    return 0;
}

FENTRY(FN_SCM_DETACH_FDS)
{
    scm_detach_begin(ctx[ARG_SCM_DETACH_FDS_MSG], ctx[ARG_SCM_DETACH_FDS_SCM]);
    return 0;
}

FEXIT(FN_SCM_DETACH_FDS)
{
    scm_detach_done();
    return 0;
}

FEXIT(FN_RECEIVE_FD)
{
    scm_received_fd(ctx[ARG_RECEIVE_FD_FILE], (u32)ctx[ARG_RECEIVE_FD_O_FLAGS],
                    (s64)(int)ctx[NARGS_RECEIVE_FD]);
    return 0;
}
