/* ring.h - what the hardworker's program shares with userspace: the ring-buffer record
 * and the counters.
 *
 * roles/vocab.py holds the same layout for Python (RING_RECORD_FIELDS, KIND_*,
 * HW_COUNTERS); tests/test_layout.py compiles this header with gcc and checks the two
 * agree field by field, so change both together. Only <linux/types.h>: no bcc, no BPF.
 */
#ifndef SKIM_RING_H
#define SKIM_RING_H

#include <linux/types.h>

/* struct skim_rec.kind: what the captured bytes are */
#define SKIM_KIND_RAW    0  /* segment bytes at TCP seq: reassemble */
#define SKIM_KIND_RECORD 1  /* exactly one whole record that the policy delivers */

/* Each frame ends in exactly one outcome counter (PASSED, MALFORMED, FRAGMENTS,
 * DROPPED_*, FORWARDED): their sum is the frames the program saw. MATCHED, CAPTURED,
 * UNCAPTURED and MAILBOX count steps along the way, on top of the outcome. */
enum skim_counter {
	C_MATCHED = 0,      /* step: segments of the skimmed stream (TOS, daddr, dport) */
	C_CAPTURED,         /* step: records submitted to the ring buffer */
	C_DROPPED_FULL,     /* ring buffer had no room: XDP_DROP, sensor retransmits */
	C_DROPPED_OVERSIZE, /* payload > SKIM_CAPTURE: XDP_DROP */
	C_PASSED,           /* not the skimmed stream: XDP_PASS, untouched */
	C_MALFORMED,        /* truncated or bogus headers: XDP_PASS, or XDP_DROP once matched */
	C_FRAGMENTS,        /* marked IPv4 fragments to HW_IP: dropped (cannot be matched by port) */
	C_FORWARDED,        /* XDP_TX to the logger (captured + pure ACKs) */
	C_UNCAPTURED,       /* step, filter/latest: data segments forwarded without a ring record */
	C_DROPPED_ORDER,    /* filter/latest: behind a hole or before a SYN: sensor resends */
	C_MAILBOX,          /* step, latest: records written into the mailbox */
	C_MAX,
};

/* One ring-buffer record: constant size, because the reservation size must be
 * a compile-time constant. 20-byte header, then the payload. */
struct skim_rec {
	__be32 saddr;  /* network order, as on the wire */
	__u16 sport;   /* host order */
	__u8 flags;    /* TCP flags byte */
	__u8 kind;     /* SKIM_KIND_RAW: segment bytes; SKIM_KIND_RECORD: one whole record */
	__u32 seq;     /* host order */
	__u32 len;     /* payload bytes that follow */
	__u32 base;    /* filter/latest: the flow's evaluated frontier (next seq) before this */
	__u8 data[SKIM_CAPTURE];
};

#endif /* SKIM_RING_H */
