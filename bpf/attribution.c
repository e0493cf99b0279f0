/* attribution.c - where the measured CPUs' time goes, from kernel tracepoints (bcc).
 *
 * Per measured CPU a small state machine follows what runs: the task (idle, the role,
 * another task) at depth 0, and above it, as a stack, the cpuidle state, softirqs and hard
 * interrupts that nest on it. Every event charges the time since the previous event to the
 * frame on top, so nested intervals are subtracted from their parent and the parts add up
 * to the time covered. Time is charged only inside the window [ctl.t_open, ctl.t_close)
 * that userspace sets; the state is followed from the moment the programs are attached, so
 * the context at the window's start is known.
 *
 * Busy periods (leaving idle until idling again) go to a ring buffer with BPF_RB_NO_WAKEUP:
 * no wake-up (an irq_work, a self-IPI) on the measured CPU; userspace reads after the window.
 *
 * The programs time themselves on the measured CPUs (self_ns: from their first clock read to
 * their last), the part of their cost that depends on how warm the caches are: after idle in a
 * VM it is several times what a hot loop gives (roles/attribution_cost.py).
 *
 * Cheap by construction: raw tracepoints only (no record formatting; tracefs is still needed
 * to find which exist), per-CPU array slots for everything but other tasks, counters in the per-CPU state; no task_struct layout needed.
 *
 * Constants (-D): ATTR_CPU_MASK (u64 bit mask of measured CPUs), ATTR_NR_CPUS (possible
 * CPUs, <= 64), ATTR_RB_PAGES, and HAVE_<group> for each optional tracepoint group present.
 */
#include <uapi/linux/ptrace.h>

#define MAXD 8
#define NSOFT 10
#define NVEC 16
#define NIRQ 512
/* time slots per CPU (an array: cheap lookups); other tasks go to a hash by task pointer */
#define S_UNKNOWN 0
#define S_IDLE 1
#define S_ROLE 2
#define S_CSTATE 3
#define S_IPI 4
#define S_SOFT 5
#define S_VEC (S_SOFT + NSOFT)
#define S_IRQ (S_VEC + NVEC)
#define S_IDLE_EXIT (S_IRQ + NIRQ + 1)  /* the idle task from a cpuidle exit to its switch-out */
#define NSLOT (S_IDLE_EXIT + 1)
#define S_TASK 0xffff

enum kind {  /* frame kinds; keep in sync with roles/attribution.py KINDS */
    K_UNKNOWN = 0, K_IDLE, K_ROLE, K_TASK, K_CSTATE, K_SOFTIRQ, K_IRQ, K_VECTOR, K_IPI,
    K_IDLE_EXIT,  /* never a frame's kind: names the S_IDLE_EXIT slot on the read side */
};
enum cls { C_ROLE = 0, C_TASK, C_SOFTIRQ_NET, C_SOFTIRQ, C_HARDIRQ, C_IDLE, C_UNKNOWN, NCLS };
enum what {  /* per-CPU counters; keep in sync with roles/attribution.py COUNTERS */
    W_WAKEUP = 0, W_SWITCH_IN, W_SWITCH_OUT_PREEMPT, W_SWITCH_OUT_SLEEP, W_NAPI, W_NAPI_WORK,
    W_IPI_SENT, W_IPI_RECV, W_MISMATCH, W_DEPTH, W_RB_FULL, W_SWITCH, W_UNSEEN, NW = 16,
};

struct frame { u32 kind, slot; u64 id; };
struct state {
    u64 last;                   /* time of the previous event on this CPU */
    u32 depth, busy;
    u64 idle_task;              /* this CPU's idle task (learnt when it switches out) */
    u64 self_ns, self_runs;     /* these programs' own run time here: always (read at the edges) */
    struct frame f[MAXD];
    u64 pstart;                 /* current busy period: start, ns per class, counts */
    u64 pns[NCLS];
    u32 pnet, prole, emitted;
    u32 idle_exit;              /* the last event left a cpuidle state into the idle loop */
    u64 cnt[NW];
    u64 ipi_to[64];             /* by target / source CPU (index masked: verifier) */
    u64 ipi_from[64];
};
struct ctl { u64 t_open, t_close; u32 tgid[4]; };
struct aval { u64 ns, count; };
struct tkey { u32 cpu, pad; u64 task; };
struct fkey { u32 cpu, dir; u64 fn; };
struct tinfo { u32 pid, tgid; char comm[16]; };
struct period { u64 start, end; u32 cpu, net_rx, role_in, pad; u64 ns[NCLS]; };

BPF_ARRAY(ctl, struct ctl, 1);
BPF_ARRAY(st, struct state, ATTR_NR_CPUS);
BPF_ARRAY(slots, struct aval, ATTR_NR_CPUS * NSLOT);
BPF_HASH(tasks, struct tkey, struct aval, 8192);
BPF_HASH(tinfo, u64, struct tinfo, 8192);
BPF_HASH(role_task, u64, u32, 1024);
BPF_HASH(ipifn, struct fkey, u64, 1024);
BPF_RINGBUF_OUTPUT(periods, ATTR_RB_PAGES);

static __always_inline int measured(u32 cpu) {
    return cpu < 64 && ((ATTR_CPU_MASK >> cpu) & 1);
}

static __always_inline int window(struct ctl *c, u64 ts) {
    return c->t_open && ts >= c->t_open && (!c->t_close || ts < c->t_close);
}

static __always_inline struct ctl *getctl(void) {
    int zero = 0;
    return ctl.lookup(&zero);
}

/* The program's own time since t0 (its first clock read), on a measured CPU. */
static __always_inline void took(struct state *s, u64 t0) {
    s->self_ns += bpf_ktime_get_ns() - t0;
    s->self_runs++;
}

/* The same for a program that an interrupt can nest into (softirq context runs with interrupts
 * on): r0 is self_runs when it began. If another run ended in between, an interrupt came, and
 * its whole handler would count as this program's time: the run is counted, its time not (a
 * program's ~0.3 us missing against a handler's microseconds added; rare either way). */
static __always_inline void took_once(struct state *s, u64 t0, u64 r0) {
    if (s->self_runs == r0)
        s->self_ns += bpf_ktime_get_ns() - t0;
    s->self_runs++;
}

static __always_inline u32 cls_of(struct frame *f) {
    switch (f->kind) {
    case K_ROLE: return C_ROLE;
    case K_TASK: return C_TASK;
    case K_SOFTIRQ: return (f->id == 2 || f->id == 3) ? C_SOFTIRQ_NET : C_SOFTIRQ;
    case K_IRQ: case K_VECTOR: case K_IPI: return C_HARDIRQ;
    case K_IDLE: case K_CSTATE: return C_IDLE;
    }
    return C_UNKNOWN;
}

static __always_inline u32 is_busy(struct state *s) {
    if (s->f[0].kind != K_IDLE)
        return 1;
    return !(s->depth == 0 || (s->depth == 1 && s->f[1].kind == K_CSTATE));
}

static __always_inline struct frame *top(struct state *s) {
    u32 d = s->depth;
    if (d >= MAXD)
        d = MAXD - 1;
    return &s->f[d];
}

/* The accumulator of a frame: an array slot, or the task hash. */
static __always_inline struct aval *acc_of(u32 cpu, struct frame *f) {
    if (f->slot == S_TASK) {
        struct tkey k = {.cpu = cpu, .task = f->id};
        struct aval z = {};
        return tasks.lookup_or_try_init(&k, &z);
    }
    u32 i = cpu * NSLOT + (f->slot < NSLOT ? f->slot : S_UNKNOWN);
    return slots.lookup(&i);
}

static __always_inline void emit(struct state *s, struct ctl *c, u32 cpu, u64 end) {
    u64 start = s->pstart;
    if (start < c->t_open)
        start = c->t_open;
    if (c->t_close && end > c->t_close)
        end = c->t_close;
    if (!c->t_open || end <= start || s->emitted)
        return;
    struct period *p = periods.ringbuf_reserve(sizeof(struct period));
    if (!p) {
        s->cnt[W_RB_FULL]++;
        return;
    }
    p->start = start;
    p->end = end;
    p->cpu = cpu;
    p->net_rx = s->pnet;
    p->role_in = s->prole;
    p->pad = 0;
#pragma unroll
    for (int i = 0; i < NCLS; i++)
        p->ns[i] = s->pns[i];
    periods.ringbuf_submit(p, BPF_RB_NO_WAKEUP);  /* no wake-up: read after the window */
    if (c->t_close && end >= c->t_close)
        s->emitted = 1;  /* a period running across the close is emitted once */
}

static __always_inline int is_role_tgid(struct ctl *c, u32 tgid) {
    return tgid && (tgid == c->tgid[0] || tgid == c->tgid[1] || tgid == c->tgid[2] ||
                    tgid == c->tgid[3]);
}

/* The task level is whatever is current: if it is not the task last switched to, a switch was
 * not seen (on the lab's VM the switch *out* of some of the control machine's own threads is
 * never traced: the next switch comes from another task, and part of the stretch was idle).
 * Every event checks it (an interrupt's current is the task it interrupted), so the stretch
 * since the last event goes to the task that really ran, before it is charged. This also
 * names the first stretch after attach, and a CPU's idle task before it is learnt. */
static __always_inline void own_stretch(struct state *s, struct ctl *c, u64 prev, u32 prev_pid,
                                        u32 prev_tgid, u64 ts) {
    struct frame *f = &s->f[0];
    if (f->id == prev)
        return;
    if (s->last && window(c, ts))
        s->cnt[W_UNSEEN]++;
    f->id = prev;
    if (prev_pid == 0) {
        f->kind = K_IDLE;
        f->slot = S_IDLE;
    } else if (is_role_tgid(c, prev_tgid)) {
        f->kind = K_ROLE;
        f->slot = S_ROLE;
    } else {
        f->kind = K_TASK;
        f->slot = S_TASK;
    }
}

/* Charge [s->last, ts) (clipped to the window) to the top frame. */
static __always_inline struct state *charge(u32 cpu, u64 ts, struct ctl *c) {
    struct state *s = st.lookup(&cpu);
    if (!s)
        return 0;
    if (s->depth == 0) {
        u64 pt = bpf_get_current_pid_tgid();
        own_stretch(s, c, bpf_get_current_task(), (u32)pt, pt >> 32, ts);
    }
    u64 a = s->last, b = ts;
    /* An interrupt that came between this program's clock read and here (a softirq's program
     * runs with interrupts on) has charged up to its own, later time: moving last back to ts
     * would charge that stretch twice (0.33 ms once, with the vCPU preempted in between). */
    if (b < a)
        return s;
    s->last = ts;
    if (!c->t_open || !a)
        return s;
    if (a < c->t_open)
        a = c->t_open;
    if (c->t_close && b > c->t_close)
        b = c->t_close;
    if (b <= a)
        return s;
    struct frame *f = top(s);
    struct aval *v = acc_of(cpu, f);
    if (v)
        v->ns += b - a;
    if (s->busy) {
        u32 cl = cls_of(f);
        if (cl < NCLS)
            s->pns[cl] += b - a;
    }
    return s;
}

/* After the state changed: open or close a busy period. */
static __always_inline void transition(struct state *s, struct ctl *c, u32 cpu, u64 ts) {
    u32 busy = is_busy(s);
    if (busy && !s->busy) {
        s->pstart = ts;
        s->pnet = s->prole = s->emitted = 0;
#pragma unroll
        for (int i = 0; i < NCLS; i++)
            s->pns[i] = 0;
    } else if (!busy && s->busy) {
        emit(s, c, cpu, ts);
    } else if (busy && c->t_close && ts >= c->t_close) {
        emit(s, c, cpu, ts);  /* still busy after the close: emit what the window saw */
    }
    s->busy = busy;
}

static __always_inline void bump(u32 cpu, struct ctl *c, u64 ts, struct frame *f) {
    if (!window(c, ts))
        return;
    struct aval *v = acc_of(cpu, f);
    if (v)
        v->count++;
}

static __always_inline int push(u32 kind, u32 slot, u64 id) {
    u32 cpu = bpf_get_smp_processor_id();
    if (!measured(cpu))
        return 0;
    u64 ts = bpf_ktime_get_ns();  /* first: the self time includes the maps' cold misses */
    struct ctl *c = getctl();
    if (!c)
        return 0;
    struct state *s = charge(cpu, ts, c);
    if (!s)
        return 0;
    u64 r0 = s->self_runs;
    if (s->depth + 1 >= MAXD) {
        if (window(c, ts))
            s->cnt[W_DEPTH]++;
        took_once(s, ts, r0);
        return 0;
    }
    if (kind == K_CSTATE)
        s->idle_exit = 0;  /* back into a cpuidle state: that stretch was the idle loop */
    s->depth++;
    u32 d = s->depth;
    /* re-bound for the verifier: clang folds this check into the one above (d = depth + 1)
     * and then indexes f[] with a register the verifier sees as unbounded */
    asm volatile("" : "+r"(d));
    if (d >= MAXD)
        return 0;
    struct frame *f = &s->f[d];
    f->kind = kind;
    f->slot = slot;
    f->id = id;
    bump(cpu, c, ts, f);
    transition(s, c, cpu, ts);
    if (kind == K_SOFTIRQ && id == 3)
        s->pnet++;  /* after the transition: a softirq in idle opens the period */
    took_once(s, ts, r0);
    return 0;
}

static __always_inline int pop(u32 kind) {
    u32 cpu = bpf_get_smp_processor_id();
    if (!measured(cpu))
        return 0;
    u64 ts = bpf_ktime_get_ns();
    struct ctl *c = getctl();
    if (!c)
        return 0;
    struct state *s = charge(cpu, ts, c);
    if (!s)
        return 0;
    u64 r0 = s->self_runs;
    struct frame *f = top(s);
    if (s->depth == 0 || f->kind != kind) {
        if (window(c, ts))
            s->cnt[W_MISMATCH]++;  /* an entry we missed (attached mid-way) */
        took_once(s, ts, r0);
        return 0;
    }
    s->depth--;
    if (kind == K_CSTATE && s->depth == 0)
        s->idle_exit = 1;
    transition(s, c, cpu, ts);
    took_once(s, ts, r0);
    return 0;
}


/* (bool preempt, struct task_struct *prev, struct task_struct *next, unsigned prev_state)
 * prev is the current task: its pid, tgid and comm come from helpers, so no task_struct
 * layout is needed; next is known by its pointer (idle task, a role thread seen before). */
RAW_TRACEPOINT_PROBE(sched_switch) {
    u32 cpu = bpf_get_smp_processor_id();
    if (!measured(cpu))
        return 0;
    u64 ts = bpf_ktime_get_ns();
    struct ctl *c = getctl();
    if (!c)
        return 0;
    u64 prev = ctx->args[1], next = ctx->args[2], prev_state = ctx->args[3];
    u64 pt = bpf_get_current_pid_tgid();
    u32 prev_pid = (u32)pt, prev_tgid = pt >> 32;
    struct state *s0 = st.lookup(&cpu);
    if (s0) {
        own_stretch(s0, c, prev, prev_pid, prev_tgid, ts);
        /* The idle task switching out right after a cpuidle exit: that stretch is the way out
         * of idle (tick_nohz_idle_exit restarting the tick, schedule_idle), which the kernel's
         * idle accounting counts busy and no tracepoint brackets (~5 us per wake in a VM).
         * The idle task's other stretches outside a cpuidle state stay in S_IDLE ("idle loop"
         * on the read side, which counts both busy and shows them apart). */
        if (s0->depth == 0 && s0->idle_exit && s0->f[0].kind == K_IDLE)
            s0->f[0].slot = S_IDLE_EXIT;
        s0->idle_exit = 0;
    }
    struct state *s = charge(cpu, ts, c);
    if (!s)
        return 0;
    int inwin = window(c, ts);
    if (s->depth && inwin)
        s->cnt[W_DEPTH]++;  /* a switch is never nested: a missed exit, reset */
    s->depth = 0;
    if (prev_pid == 0) {
        s->idle_task = prev;
    } else if (is_role_tgid(c, prev_tgid)) {
        u32 one = 1;
        if (!role_task.lookup(&prev))
            role_task.update(&prev, &one);
        if (inwin)
            s->cnt[prev_state ? W_SWITCH_OUT_SLEEP : W_SWITCH_OUT_PREEMPT]++;
    } else if (!tinfo.lookup(&prev)) {
        struct tinfo ti = {.pid = prev_pid, .tgid = prev_tgid};
        bpf_get_current_comm(&ti.comm, sizeof(ti.comm));
        tinfo.update(&prev, &ti);
    }
    if (inwin)
        s->cnt[W_SWITCH]++;
    struct frame *f = &s->f[0];
    if (next == s->idle_task) {
        f->kind = K_IDLE;
        f->slot = S_IDLE;
    } else if (role_task.lookup(&next)) {
        f->kind = K_ROLE;
        f->slot = S_ROLE;
        if (inwin)
            s->cnt[W_SWITCH_IN]++;
    } else {
        f->kind = K_TASK;
        f->slot = S_TASK;
    }
    f->id = next;
    bump(cpu, c, ts, f);
    transition(s, c, cpu, ts);
    if (f->kind == K_ROLE && s->busy)
        s->prole++;
    took(s, ts);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup) {  /* (struct task_struct *p): counted for role threads */
    u64 p = ctx->args[0];
    u32 cpu = bpf_get_smp_processor_id();
    int here = measured(cpu);  /* elsewhere (most wake-ups): one lookup, as cheap as it was */
    u64 t0 = here ? bpf_ktime_get_ns() : 0;
    if (role_task.lookup(&p)) {
        struct ctl *c = getctl();
        struct state *s = st.lookup(&cpu);  /* where the wake-up completes (waker or target) */
        if (c && s && window(c, here ? t0 : bpf_ktime_get_ns()))
            __sync_fetch_and_add(&s->cnt[W_WAKEUP], 1);
    }
    if (here) {
        struct state *s = st.lookup(&cpu);
        if (s)
            took(s, t0);
    }
    return 0;
}

/* Raw tracepoints where the arguments are plain numbers: cheaper than perf-based ones (no
 * record is formatted), and x86's irq_work vectors refuse perf (sampling) attachment. */
RAW_TRACEPOINT_PROBE(softirq_entry) {
    u32 v = (u32)ctx->args[0];
    return push(K_SOFTIRQ, S_SOFT + (v < NSOFT ? v : NSOFT - 1), v);
}
RAW_TRACEPOINT_PROBE(softirq_exit) { return pop(K_SOFTIRQ); }
RAW_TRACEPOINT_PROBE(irq_handler_entry) {
    u32 irq = (u32)ctx->args[0];
    return push(K_IRQ, S_IRQ + (irq < NIRQ ? irq : NIRQ), irq);
}
RAW_TRACEPOINT_PROBE(irq_handler_exit) { return pop(K_IRQ); }

#ifdef HAVE_CPU_IDLE
RAW_TRACEPOINT_PROBE(cpu_idle) {  /* (state, cpu) */
    u32 state = (u32)ctx->args[0];
    if (state == (u32)-1)  /* PWR_EVENT_EXIT */
        return pop(K_CSTATE);
    return push(K_CSTATE, S_CSTATE, state);
}
#endif

#ifdef HAVE_NAPI
RAW_TRACEPOINT_PROBE(napi_poll) {  /* (struct napi_struct *napi, int work, int budget) */
    u32 cpu = bpf_get_smp_processor_id();
    if (!measured(cpu))
        return 0;
    u64 t0 = bpf_ktime_get_ns();
    struct ctl *c = getctl();
    struct state *s = st.lookup(&cpu);
    if (!s)
        return 0;
    u64 r0 = s->self_runs;
    if (c && window(c, t0)) {
        s->cnt[W_NAPI]++;
        s->cnt[W_NAPI_WORK] += (u32)ctx->args[1];
    }
    took_once(s, t0, r0);
    return 0;
}
#endif

/* IPIs sent: from a measured CPU (by target and callback), and to one (received). */
static __always_inline void fn_count(u32 cpu, u32 dir, u64 fn) {
    struct fkey k = {.cpu = cpu, .dir = dir, .fn = fn};
    u64 zero = 0, *v = ipifn.lookup_or_try_init(&k, &zero);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void ipi_sent(u32 src, u32 dst, u64 fn, int inwin) {
    if (!inwin || dst >= ATTR_NR_CPUS || src >= ATTR_NR_CPUS)
        return;
    /* re-bound for the verifier: clang drops the masks below after the checks above */
    asm volatile("" : "+r"(dst));
    asm volatile("" : "+r"(src));
    if (measured(src)) {
        struct state *s = st.lookup(&src);
        if (s) {
            s->cnt[W_IPI_SENT]++;
            s->ipi_to[dst & 63]++;
        }
        fn_count(src, 0, fn);
    }
    if (measured(dst)) {
        struct state *s = st.lookup(&dst);
        if (s) {
            __sync_fetch_and_add(&s->cnt[W_IPI_RECV], 1);
            __sync_fetch_and_add(&s->ipi_from[src & 63], 1);
        }
        fn_count(dst, 1, fn);
    }
}

static __always_inline int ipi_win(u64 t0) {
    struct ctl *c = getctl();
    return c && window(c, t0);
}

/* The self time of an IPI send on a measured CPU. */
static __always_inline void ipi_took(u32 src, u64 t0) {
    if (!measured(src))
        return;
    struct state *s = st.lookup(&src);
    if (s)
        took(s, t0);
}

#ifdef HAVE_IPI_SEND
RAW_TRACEPOINT_PROBE(ipi_send_cpu) {  /* (cpu, callsite, callback) */
    u64 t0 = bpf_ktime_get_ns();
    u32 src = bpf_get_smp_processor_id();
    ipi_sent(src, (u32)ctx->args[0], ctx->args[2], ipi_win(t0));
    ipi_took(src, t0);
    return 0;
}

RAW_TRACEPOINT_PROBE(ipi_send_cpumask) {  /* (const struct cpumask *, callsite, callback) */
    u64 t0 = bpf_ktime_get_ns(), mask = 0;
    bpf_probe_read_kernel(&mask, sizeof(mask), (void *)ctx->args[0]);
    u32 src = bpf_get_smp_processor_id();
    u64 fn = ctx->args[2];  /* ctx is read before the loop: the verifier wants it so */
    int inwin = ipi_win(t0);
#pragma unroll
    for (int i = 0; i < ATTR_NR_CPUS; i++)
        if ((mask >> i) & 1)
            ipi_sent(src, i, fn, inwin);
    ipi_took(src, t0);
    return 0;
}
#endif

#ifdef HAVE_IPI_ENTRY  /* arm/arm64: the IPI's reason, nested in the "IPI" interrupt */
/* The reason is a string (arm64's ipi_types[]: "Rescheduling interrupts", "IRQ work
 * interrupts", ...). Those x86 has a vector for are charged to that vector's slot, so both
 * read alike, and the irq_work a ring-buffer wake-up raises inside the XDP program can be
 * told apart (roles/attribution_stats.py); the rest share the IPI slot. Its first 8 bytes,
 * as a little-endian word (arm64 Linux is little-endian), tell them apart. */
#define W8(a, b, c, d, e, f, g, h)                                                       \
    ((u64)(a) | (u64)(b) << 8 | (u64)(c) << 16 | (u64)(d) << 24 | (u64)(e) << 32 |      \
     (u64)(f) << 40 | (u64)(g) << 48 | (u64)(h) << 56)
static __always_inline u32 ipi_slot(const void *reason) {
    u64 w = 0;
    if (bpf_probe_read_kernel(&w, sizeof(w), reason))
        return S_IPI;
    if (w == W8('R', 'e', 's', 'c', 'h', 'e', 'd', 'u'))
        return S_VEC + 3;  /* reschedule */
    if (w == W8('F', 'u', 'n', 'c', 't', 'i', 'o', 'n'))
        return S_VEC + 1;  /* call_function */
    if (w == W8('I', 'R', 'Q', ' ', 'w', 'o', 'r', 'k'))
        return S_VEC + 4;  /* irq_work */
    return S_IPI;
}
RAW_TRACEPOINT_PROBE(ipi_entry) {  /* (reason) */
    return push(K_IPI, ipi_slot((const void *)ctx->args[0]), ctx->args[0]);
}
RAW_TRACEPOINT_PROBE(ipi_exit) { return pop(K_IPI); }
#endif

#ifdef HAVE_IPI_RAISE  /* arm/arm64 before 6.6: IPIs sent, by target mask */
RAW_TRACEPOINT_PROBE(ipi_raise) {  /* (const struct cpumask *target, const char *reason) */
    u64 t0 = bpf_ktime_get_ns(), mask = 0;
    bpf_probe_read_kernel(&mask, sizeof(mask), (void *)ctx->args[0]);
    u32 src = bpf_get_smp_processor_id();
    u64 fn = ctx->args[1];
    int inwin = ipi_win(t0);
#pragma unroll
    for (int i = 0; i < ATTR_NR_CPUS; i++)
        if ((mask >> i) & 1)
            ipi_sent(src, i, fn, inwin);
    ipi_took(src, t0);
    return 0;
}
#endif

/* x86 system vectors (interrupts that are not irq_handler_entry): IPIs, local timer. */
#define VECTOR(name, idx)                                                              \
    RAW_TRACEPOINT_PROBE(name##_entry) { return push(K_VECTOR, S_VEC + idx, idx); }   \
    RAW_TRACEPOINT_PROBE(name##_exit) { return pop(K_VECTOR); }
#ifdef HAVE_VEC_local_timer
VECTOR(local_timer, 0)
#endif
#ifdef HAVE_VEC_call_function
VECTOR(call_function, 1)
#endif
#ifdef HAVE_VEC_call_function_single
VECTOR(call_function_single, 2)
#endif
#ifdef HAVE_VEC_reschedule
VECTOR(reschedule, 3)
#endif
#ifdef HAVE_VEC_irq_work
VECTOR(irq_work, 4)
#endif
#ifdef HAVE_VEC_x86_platform_ipi
VECTOR(x86_platform_ipi, 5)
#endif
#ifdef HAVE_VEC_thermal_apic
VECTOR(thermal_apic, 6)
#endif
#ifdef HAVE_VEC_error_apic
VECTOR(error_apic, 7)
#endif
#ifdef HAVE_VEC_spurious_apic
VECTOR(spurious_apic, 8)
#endif
