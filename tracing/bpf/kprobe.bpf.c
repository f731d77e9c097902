/*
 * Backend "kprobe": kprobes/kretprobes on __scm_send, scm_detach_fds and the
 * receive-fd function (their names are resolved on the running kernel, and
 * the probes attached by the session: rawsys.trace.bpf.program's
 * kprobe_attachments).  Entry arguments are kept per thread for the return
 * probes.
 */
#include "prelude.bpf.h"
#include "maps.bpf.h"
#include "files.bpf.h"
#include "cmsg.bpf.h"
#include "scm.bpf.h"

int kp_scm_send(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!calls.lookup(&tid))
        return 0;
    u64 kmsg = PT_REGS_PARM2(ctx), scm = PT_REGS_PARM3(ctx);
    kmsg_args.update(&tid, &kmsg);
    scm_args.update(&tid, &scm);
    return 0;
}

int kretp_scm_send(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *kmsg = kmsg_args.lookup(&tid);
    u64 *scm = scm_args.lookup(&tid);
    if (kmsg && scm)
        scm_send_done(*kmsg, *scm, (s64)(int)PT_REGS_RC(ctx));
    kmsg_args.delete(&tid);
    scm_args.delete(&tid);
    return 0;
}

int kp_scm_detach_fds(struct pt_regs *ctx)
{
    scm_detach_begin(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
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
    if (!recving.lookup(&tid))
        return 0;
    u64 file = PT_REGS_PARM1(ctx);
    u32 o_flags = (u32)PT_REGS_PARM3(ctx);
    rfd_file.update(&tid, &file);
    rfd_flags.update(&tid, &o_flags);
    return 0;
}

int kretp_receive_fd(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *file = rfd_file.lookup(&tid);
    u32 *o_flags = rfd_flags.lookup(&tid);
    if (file && o_flags)
        scm_received_fd(*file, *o_flags, (s64)(int)PT_REGS_RC(ctx));
    rfd_file.delete(&tid);
    rfd_flags.delete(&tid);
    return 0;
}
