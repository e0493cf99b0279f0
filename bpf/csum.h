/* csum.h - incremental checksum updates for tcpskim's XDP programs.
 *
 * Style of Katran's csum_helpers.h and xdp-tutorial's rewrite helpers: a changed
 * field updates the checksums that cover it, without re-summing the packet.
 * Names carry a skim_ prefix: bcc's own headers pull in include/net/checksum.h,
 * which already defines csum_fold(), csum_replace4() and friends.
 *
 * The math (RFC 1071, RFC 1624): an Internet checksum is the one's complement
 * of the one's complement sum of 16-bit words. Replacing word m by m' changes
 * the stored checksum HC to HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3; eqn. 2's
 * HC - m' + m can give -0 where +0 is right). One's complement addition is
 * byte-order independent, so the words can be summed as they lie in memory:
 * network-order fields need no swaps.
 */
#ifndef SKIM_CSUM_H
#define SKIM_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/tcp.h>

/* Fold a 32-bit one's complement sum to 16 bits. bpf_csum_diff returns the
 * arch's csum_partial result: unfolded 32 bits on x86-64, already folded on
 * arm64. Folding twice is correct for both (the first fold leaves at most
 * 0x1fffe, the second at most 0xffff). */
static __always_inline __u16 skim_csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* RFC 1624 eqn. 3 over a whole 32-bit word: both 16-bit halves of an IPv4
 * address change across a /16 (updating only the low half was the original
 * prototype's bug). bpf_csum_diff(from, 4, to, 4, seed) returns
 * seed + ~from + to as a one's complement sum, seeded with ~HC; the fold then
 * complements it. bpf_csum_diff wants stack pointers and multiples of 4 bytes. */
static __always_inline void skim_csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__be32 f = from, t = to;
	__u32 seed = (~(__u32)*sum) & 0xffff;
	__s64 r = bpf_csum_diff(&f, sizeof(f), &t, sizeof(t), seed);

	*sum = skim_csum_fold((__u32)r);
}

/* A full 32-bit address change: the IPv4 header checksum and the TCP checksum
 * (its pseudo-header covers both addresses) take the same delta. */
static __always_inline void ipv4_tcp_set_addr(struct iphdr *iph, struct tcphdr *tcph,
					      __be32 *field, __be32 to)
{
	__be32 from = *field;

	if (from == to)
		return;
	*field = to;
	skim_csum_replace4(&iph->check, from, to);
	skim_csum_replace4(&tcph->check, from, to);
}

#endif /* SKIM_CSUM_H */
