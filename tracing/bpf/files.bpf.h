/*
 * From an fd number to the kernel's struct file and its identity, in the
 * calling thread's fd table (current->files->fdt).
 *
 * Kernel memory is read at OFF_* offsets taken from the running kernel's
 * BTF; struct layouts from the headers bcc compiles against are never used
 * (they may be another kernel's).
 */

/* The calling thread's fd table, read once per message. */
struct fd_table {
    u64 fd_array;      /* struct file ** */
    u64 close_on_exec; /* unsigned long * */
    u32 max_fds;
};

/* Spans of kernel structs read in one go (SPAN_* in the prelude),
 * and the fd table: kept in a map, not on the stack, because the verifier
 * tracks stack copies of values and then fails to prune the per-fd loops. */
struct span_scratch {
    struct fd_table table;
    u8 file[MAX_SPAN];
    u8 inode[MAX_SPAN];
    u8 fdt[MAX_SPAN];
};
BPF_BYTES_TABLE("percpu_array", int, struct span_scratch, spans, 1);
#define SPAN_GET(buf, span, off, dst) \
    __builtin_memcpy(&(dst), (buf) + ((off) - SPAN_##span##_LO), sizeof(dst))

/* task->files->fdt, read with plain loads: bpf_get_current_task_btf() gives a
 * BTF-typed pointer, and the verifier checks each load against the running
 * kernel's BTF at the OFF_* offsets (which come from that same BTF); the JIT
 * turns them into fault-handled loads, far cheaper than a helper call each. */
static __always_inline void *btf_ptr(void *p, const u32 off) { return *(void **)(p + off); }
static __always_inline u64 btf_u64(void *p, const u32 off) { return *(u64 *)(p + off); }
static __always_inline u32 btf_u32(void *p, const u32 off) { return *(u32 *)(p + off); }

/* The per-CPU scratch, its fd table emptied (0 only if the map has no slot). */
static __always_inline struct span_scratch *spans_with_empty_table(void)
{
    int zero = 0;
    struct span_scratch *sp = spans.lookup(&zero);
    if (sp) {
        sp->table.fd_array = 0;
        sp->table.close_on_exec = 0;
        sp->table.max_fds = 0;
    }
    return sp;
}

static __always_inline const struct fd_table *current_fd_table(void)
{
    struct span_scratch *sp = spans_with_empty_table();
    if (!sp)
        return 0;
    struct fd_table *t = &sp->table;
    struct task_struct *task = bpf_get_current_task_btf();
    void *files = btf_ptr((void *)task, OFF_TASK_STRUCT_FILES);
    if (!files)
        return t;
    void *fdt = btf_ptr(files, OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return t;
    t->max_fds = btf_u32(fdt, OFF_FDTABLE_MAX_FDS);
    t->fd_array = btf_u64(fdt, OFF_FDTABLE_FD);
    t->close_on_exec = btf_u64(fdt, OFF_FDTABLE_CLOSE_ON_EXEC);
    return t;
}

/* The same with helper reads, for the paths with loops over many messages or
 * fds: there the verifier re-checks BTF-typed loads against the kernel's BTF
 * on every walk, which costs start-up time (tens of ms per program). */
static __always_inline const struct fd_table *current_fd_table_read(void)
{
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0;
    struct span_scratch *sp = spans_with_empty_table();
    if (!sp)
        return 0;
    struct fd_table *t = &sp->table;
    if (bpf_probe_read_kernel(&files, sizeof(files), (void *)task + OFF_TASK_STRUCT_FILES) || !files)
        return t;
    if (bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)files + OFF_FILES_STRUCT_FDT) || !fdt)
        return t;
    if (bpf_probe_read_kernel(sp->fdt, SPAN_FDTABLE_LEN, (void *)fdt + SPAN_FDTABLE_LO))
        return t;
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_MAX_FDS, t->max_fds);
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_FD, t->fd_array);
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_CLOSE_ON_EXEC, t->close_on_exec);
    return t;
}

/* fd -> struct file * in table t (0 if not open); *cloexec gets FD_FLAG_CLOEXEC. */
static __always_inline u64 resolve_fd(const struct fd_table *t, s32 fd, u32 *fd_flags)
{
    u64 file = 0, word = 0;
    *fd_flags = 0;
    if (fd < 0 || (u32)fd >= t->max_fds || !t->fd_array)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), (void *)t->fd_array + (u64)fd * sizeof(u64));
    if (t->close_on_exec &&
        !bpf_probe_read_kernel(&word, sizeof(word),
                               (void *)t->close_on_exec + ((u64)fd / 64) * sizeof(u64)) &&
        (word >> ((u64)fd % 64)) & 1)
        *fd_flags = FD_FLAG_CLOEXEC;
    return file;
}

/* Identity of a struct file: inode number, mode, raw reference counter, name. */
static __always_inline void fill_file(struct fd_file *r, u64 file)
{
    u64 inode = 0, dentry = 0, name = 0;
    int zero = 0;
    r->file = file;
    r->ino = 0;
    r->ref_raw = 0;
    r->mode = 0;
    r->name[0] = 0;
    struct span_scratch *sp = spans.lookup(&zero);
    if (!file || !sp)
        return;
    if (bpf_probe_read_kernel(sp->file, SPAN_FILE_LEN, (void *)file + SPAN_FILE_LO))
        return;
    SPAN_GET(sp->file, FILE, OFF_FILE_F_COUNT, r->ref_raw);
    SPAN_GET(sp->file, FILE, OFF_FILE_F_INODE, inode);
    SPAN_GET(sp->file, FILE, OFF_FILE_F_PATH_DENTRY, dentry);
    if (inode && !bpf_probe_read_kernel(sp->inode, SPAN_INODE_LEN, (void *)inode + SPAN_INODE_LO)) {
        SPAN_GET(sp->inode, INODE, OFF_INODE_I_INO, r->ino);
        SPAN_GET(sp->inode, INODE, OFF_INODE_I_MODE, r->mode);
    }
    /* Pipes and sockets have no name of their own (theirs is made up from the
     * inode number, which is reported anyway): skip the string read. */
    u32 fmt = r->mode & S_IFMT;
    if (fmt == S_IFIFO || fmt == S_IFSOCK)
        return;
    if (dentry &&
        !bpf_probe_read_kernel(&name, sizeof(name), (void *)dentry + OFF_DENTRY_D_NAME_NAME) &&
        name)
        bpf_probe_read_kernel_str(r->name, sizeof(r->name), (void *)name);
}

/* Where loop__files_into_event takes each fd: 0, from fd_scratch, looked up
 * in the per-CPU table; 1, from the thread's slot of sent, looked up already.
 * (One callback for both: each copy of fill_file() costs bcc's compile.) */
BPF_PERCPU_ARRAY(files_from_sent, u32, 1);

static __always_inline int set_files_from_sent(u32 from_sent)
{
    int zero = 0;
    u32 *from = files_from_sent.lookup(&zero);
    if (!from)
        return 0;
    *from = from_sent;
    return 1;
}

/* The fd-to-file loop, the one every path uses: fds[0..n) (n <= max), each
 * looked up in table t.  Each fd, its close-on-exec flag and its struct file
 * go to ev->files[i] (with the file's identity) when ev is given, else to sf.
 * The loop is bpf_loop()'s (LOOP, from the prelude), so the verifier checks
 * its body once instead of once per possible fd (FD_SLOTS): the callbacks find
 * what they work on where the callers keep it, t in the per-CPU spans, fds
 * in fd_scratch, ev in event_scratch and sf in the thread's slot of sent. */
static __always_inline void resolve_fds(const struct fd_table *t, const s32 *fds, u32 n,
                                        const u32 max, struct fd_event *ev,
                                        struct sent_files *sf)
{
    if (n > max)
        n = max;
    if (!ev)
        LOOP(n, RESOLVE_INTO_SENT);
    else if (set_files_from_sent(0))
        LOOP(n, FILES_INTO_EVENT);
}

long loop__files_into_event(u64 i)
{
    int zero = 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 *from_sent = files_from_sent.lookup(&zero);
    struct fd_event *ev = event_scratch.lookup(&zero);
    if (!from_sent || !ev || i >= FD_SLOTS)
        return 1;
    u32 fl = 0;
    s32 fd;
    u64 file;
    if (*from_sent) {
        struct sent_files *sf = sent.lookup(&tid);
        if (!sf)
            return 1;
        fd = sf->fds[i];
        fl = sf->fd_flags[i];
        file = sf->files[i];
    } else {
        struct span_scratch *sp = spans.lookup(&zero);
        struct fd_scratch *s = fd_scratch.lookup(&zero);
        if (!sp || !s)
            return 1;
        fd = s->fds[i];
        file = resolve_fd(&sp->table, fd, &fl);
    }
    ev->files[i].fd = fd;
    ev->files[i].fd_flags = fl;
    fill_file(&ev->files[i], file);
    return 0;
}

long loop__resolve_into_sent(u64 i)
{
    int zero = 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct span_scratch *sp = spans.lookup(&zero);
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    struct sent_files *sf = sent.lookup(&tid);
    if (!sp || !s || !sf || i >= FD_SLOTS)
        return 1;
    u32 fl = 0;
    s32 fd = s->fds[i];
    sf->fds[i] = fd;
    sf->files[i] = resolve_fd(&sp->table, fd, &fl);
    sf->fd_flags[i] = fl;
    return 0;
}

/* The first n (at most slots) fds remembered in sf, with their files, into ev
 * (ev in event_scratch, sf the thread's slot of sent, as for resolve_fds). */
static __always_inline void copy_sent_files(struct fd_event *ev, struct sent_files *sf,
                                            u32 n, const u32 slots)
{
    if (n > slots)
        n = slots;
    if (set_files_from_sent(1))
        LOOP(n, FILES_INTO_EVENT);
    ev->nfds = n;
}
