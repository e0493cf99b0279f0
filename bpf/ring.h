/* ring.h - what the hardworker's program shares with userspace: the ring-buffer record
 * and the counters.
 *
 * roles/vocab.py holds the same layout for Python (RING_RECORD_FIELDS, KIND_*,
 * HW_COUNTERS, HW_OUTCOMES, HW_EVENTS); tests/test_layout.py compiles this header with
 * gcc and checks the two agree field by field, so change both together. Only <linux/types.h>: no bcc, no BPF.
 */
#ifndef SKIM_RING_H
#define SKIM_RING_H

#include <linux/types.h>

/* struct skim_rec.kind: what the captured bytes are */
#define SKIM_KIND_RAW    0  /* segment bytes at TCP seq: reassemble */
#define SKIM_KIND_RECORD 1  /* exactly one whole record that the policy delivers */

/* Counting rule (both programs; sensor.c has its own enum): every frame the program sees
 * ends in exactly one OUTCOME counter, counted where the program returns its action
 * (verdict()), so the outcome counters sum to the frames seen. EVENT counters are extra
 * facts about a frame on its way there, counted where they happen (count()), zero or more
 * per frame. Each enumerator's comment starts with its class: tests/test_layout.py checks
 * it against vocab.HW_OUTCOMES / HW_EVENTS, tests/test_verifier.py checks the rule. */
enum skim_counter {
	C_MATCHED = 0,      /* event: a segment of the skimmed stream (TOS, daddr, dport) */
	C_CAPTURED,         /* event: a record submitted to the ring buffer */
	C_DROPPED_FULL,     /* outcome: the ring buffer had no room: XDP_DROP, sensor retransmits */
	C_DROPPED_OVERSIZE, /* outcome: payload > SKIM_CAPTURE: XDP_DROP */
	C_PASSED,           /* outcome: not the skimmed stream: XDP_PASS, untouched */
	C_MALFORMED,        /* outcome: truncated or bogus headers: XDP_PASS, or XDP_DROP once matched */
	C_FRAGMENTS,        /* outcome: a marked IPv4 fragment to HW_IP: XDP_DROP (no ports to match) */
	C_FORWARDED,        /* outcome: XDP_TX to the logger (captured, pure ACKs, uncaptured) */
	C_UNCAPTURED,       /* event, filter/latest: a data segment forwarded without a ring record */
	C_DROPPED_ORDER,    /* outcome, filter/latest: behind a hole or before a SYN: XDP_DROP */
	C_MAILBOX,          /* event, latest: a record written into the mailbox */
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
