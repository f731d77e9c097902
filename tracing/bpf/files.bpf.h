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

/*
 * A named file's full path, resolved from its dentry chain the way d_path()
 * does (fs/d_path.c, prepend_path): the names from the file's dentry up to
 * the root of its mount, then on from the mount point in the parent mount,
 * up to the root of the mount tree.  Bounded: MAX_PATH_DEPTH steps (a name
 * or a mount crossed), PATH_BUF_LEN bytes; a path cut short is flagged.
 *
 * The names are stored leaf first, each NUL-terminated ("1\0pts\0dev\0"),
 * in the LRU map file_paths under the file's address and inode, before the
 * event naming the file is submitted: the reader finds it there.  A file
 * already there with the same dentry and mount is not walked again.
 */
struct path_key {
    u64 file;
    u64 ino;
};
struct file_path {
    u64 dentry;  /* what the path was built from: another dentry or mount */
    u64 mnt;     /* under the same key is walked again */
    u32 len;     /* bytes of buf used */
    u32 flags;   /* PATH_FLAG_* */
    char buf[PATH_BUF_LEN + PATH_NAME_LEN];
};
BPF_TABLE("lru_hash", struct path_key, struct file_path, file_paths, MAX_PATHS);
BPF_PERCPU_ARRAY(path_scratch, struct file_path, 1);

static __always_inline u64 kread_u64(u64 addr)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

static __always_inline void remember_path(u64 file, u64 ino)
{
    struct path_key key = {.file = file, .ino = ino};
    u64 dentry = kread_u64(file + OFF_FILE_F_PATH_DENTRY);
    u64 vfsmnt = kread_u64(file + OFF_FILE_F_PATH_MNT);
    if (!dentry || !vfsmnt)
        return;
    struct file_path *known = file_paths.lookup(&key);
    if (known && known->dentry == dentry && known->mnt == vfsmnt)
        return;
    int zero = 0;
    struct file_path *w = path_scratch.lookup(&zero);
    if (!w)
        return;
    w->dentry = dentry;
    w->mnt = vfsmnt;
    w->flags = PATH_FLAG_TRUNCATED;
    u64 mnt = vfsmnt - OFF_MOUNT_MNT; /* container_of(vfsmnt, struct mount, mnt) */
    u64 mnt_root = kread_u64(vfsmnt + OFF_VFSMOUNT_MNT_ROOT);
    /* The bytes used so far live in the map value, read back each step: the
     * verifier does not track values in map memory, so every step ends in
     * the same state and the walk is verified in linear time. */
    volatile u32 *used = &w->len;
    *used = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_PATH_DEPTH; i++) {
        u64 parent = kread_u64(dentry + OFF_DENTRY_D_PARENT);
        if (dentry == mnt_root || dentry == parent) {
            /* The root of this mount: go on from where it is mounted. */
            u64 mnt_parent = kread_u64(mnt + OFF_MOUNT_MNT_PARENT);
            if (!mnt_parent || mnt_parent == mnt) {
                w->flags = 0; /* the root of the mount tree: complete */
                break;
            }
            dentry = kread_u64(mnt + OFF_MOUNT_MNT_MOUNTPOINT);
            mnt = mnt_parent;
            mnt_root = kread_u64(mnt + OFF_MOUNT_MNT + OFF_VFSMOUNT_MNT_ROOT);
            continue;
        }
        u32 off = *used;
        if (off >= PATH_BUF_LEN)
            break;
        u64 name = kread_u64(dentry + OFF_DENTRY_D_NAME_NAME);
        long n = bpf_probe_read_kernel_str(w->buf + (off & (PATH_BUF_LEN - 1)), PATH_NAME_LEN,
                                           (void *)name);
        if (n <= 0)
            break;
        *used = off + (u32)n;
        dentry = parent;
    }
    file_paths.update(&key, w);
}

/* Files with a path of their own: not pipes, sockets or anonymous inodes. */
static __always_inline int has_path(const struct fd_file *r)
{
    u32 fmt = r->mode & S_IFMT;
    return r->file && fmt && fmt != S_IFIFO && fmt != S_IFSOCK;
}

/* A count read back from map memory, where the verifier does not know it:
 * after a loop that ended at any of its bounds, a count it has narrowed
 * differently on each way out would have the next loop verified once per way. */
#define UNREFINED(field) (*(volatile typeof(field) *)&(field))

/* The paths of the first PATH_FILES named files of records[0..n), into file_paths. */
static __always_inline void remember_paths(const struct fd_file *records, u32 n)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < PATH_FILES; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        if (has_path(&records[i]))
            remember_path(records[i].file, records[i].ino);
    }
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
