/*
 * Backend "kprobe": kprobes/kretprobes on the kernel functions that play
 * scm_send, scm_detach_fds and receive_fd (each resolved on the running
 * kernel by its BTF prototype, and attached by the session:
 * rawsys.trace.bpf.program's kprobe_attachments).  Arguments are read from
 * the registers at the positions the prelude's ARG_* give; those a return
 * probe needs are kept per thread from the entry.
 */
#include "prelude.bpf.h"
#include "maps.bpf.h"
#include "files.bpf.h"
#include "cmsg.bpf.h"
#include "causes.bpf.h"
#include "scm.bpf.h"

/* Argument n (from 0, a constant) of the probed function, from its registers. */
#define KP_ARG(ctx, n) ((n) == 0 ? PT_REGS_PARM1(ctx) : (n) == 1 ? PT_REGS_PARM2(ctx) : \
                        (n) == 2 ? PT_REGS_PARM3(ctx) : (n) == 3 ? PT_REGS_PARM4(ctx) : \
                        (n) == 4 ? PT_REGS_PARM5(ctx) : PT_REGS_PARM6(ctx))

int kp_scm_send(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!calls.lookup(&tid))
        return 0;
    struct entry_args e = {};
    e.a = KP_ARG(ctx, ARG_SCM_SEND_MSG);
    e.b = KP_ARG(ctx, ARG_SCM_SEND_SCM);
    entry_args.update(&tid, &e);
    return 0;
}

int kretp_scm_send(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct entry_args *e = entry_args.lookup(&tid);
    if (!e)
        return 0;
    scm_send_done(e->a, e->b, (s64)(int)PT_REGS_RC(ctx));
    entry_args.delete(&tid);
    return 0;
}

int kp_scm_detach_fds(struct pt_regs *ctx)
{
    scm_detach_begin(KP_ARG(ctx, ARG_SCM_DETACH_FDS_MSG), KP_ARG(ctx, ARG_SCM_DETACH_FDS_SCM));
    return 0;
}

int kretp_scm_detach_fds(struct pt_regs *ctx)
{
    scm_detach_done();
    return 0;
}

int kp_receive_fd(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call_args *a = calls.lookup(&tid);
    if (!a || !a->detaching)
        return 0;
    struct entry_args e = {};
    e.a = KP_ARG(ctx, ARG_RECEIVE_FD_FILE);
    e.b = (u32)KP_ARG(ctx, ARG_RECEIVE_FD_O_FLAGS);
    entry_args.update(&tid, &e);
    return 0;
}

int kretp_receive_fd(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct entry_args *e = entry_args.lookup(&tid);
    if (!e)
        return 0;
    scm_received_fd(e->a, (u32)e->b, (s64)(int)PT_REGS_RC(ctx));
    entry_args.delete(&tid);
    return 0;
}
