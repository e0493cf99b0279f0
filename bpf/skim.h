/* skim.h - parsing helpers shared by tcpskim's XDP programs (checksums: csum.h).
 *
 * Style of xdp-tutorial's common/parsing_helpers.h: a cursor walks the frame and
 * every header is bounds-checked against data_end before it is touched, so the
 * verifier can prove each access. Only UAPI headers are used (bcc compiles this
 * with whatever kernel headers the host has).
 */
#ifndef SKIM_H
#define SKIM_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/in.h>

/* Byte order without kernel-internal headers: bcc targets the host's endianness. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define skim_htons(x) ((__be16)__builtin_bswap16(x))
#define skim_htonl(x) ((__be32)__builtin_bswap32(x))
#define skim_ntohs(x) ((__u16)__builtin_bswap16(x))
#define skim_ntohl(x) ((__u32)__builtin_bswap32(x))
#else
#define skim_htons(x) ((__be16)(x))
#define skim_htonl(x) ((__be32)(x))
#define skim_ntohs(x) ((__u16)(x))
#define skim_ntohl(x) ((__u32)(x))
#endif

/* include/net/ip.h is not UAPI */
#define SKIM_IP_MF     0x2000
#define SKIM_IP_OFFSET 0x1fff

/* TCP flag bits of byte 13 of the TCP header */
#define SKIM_FIN 0x01
#define SKIM_SYN 0x02
#define SKIM_RST 0x04
#define SKIM_PSH 0x08
#define SKIM_ACK 0x10

struct hdr_cursor {
	void *pos;
};

/* Returns the EtherType (network order) or -1 when the frame is too short.
 * VLAN tags are not followed: the lab and the Pis use untagged frames. */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethhdr)
{
	struct ethhdr *eth = nh->pos;

	if ((void *)(eth + 1) > data_end)
		return -1;
	nh->pos = eth + 1;
	*ethhdr = eth;
	return eth->h_proto;
}

/* Returns the IP protocol or -1. Honours IHL: options are skipped, and an IHL
 * below 5 or a header running past data_end is malformed. The variable length
 * needs its own bounds check because the verifier cannot carry iph+1's check
 * over to iph + ihl*4. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end,
				       struct iphdr **iphdr)
{
	struct iphdr *iph = nh->pos;
	int hdrsize;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4)
		return -1;
	hdrsize = iph->ihl * 4;
	if (hdrsize < (int)sizeof(*iph))
		return -1;
	if (nh->pos + hdrsize > data_end)
		return -1;
	nh->pos += hdrsize;
	*iphdr = iph;
	return iph->protocol;
}

/* Returns the TCP header length (doff*4, options included) or -1. */
static __always_inline int parse_tcphdr(struct hdr_cursor *nh, void *data_end,
					struct tcphdr **tcphdr)
{
	struct tcphdr *h = nh->pos;
	int len;

	if ((void *)(h + 1) > data_end)
		return -1;
	len = h->doff * 4;
	if (len < (int)sizeof(*h))
		return -1;
	if (nh->pos + len > data_end)
		return -1;
	nh->pos += len;
	*tcphdr = h;
	return len;
}

static __always_inline __u8 tcp_flags(struct tcphdr *h)
{
	return ((__u8 *)h)[13];
}

/* Addresses that can change at run time (a replaced board, Wi-Fi MAC
 * randomisation): one entry per MAC a program writes, in a small array read
 * per packet (`skim_addrs`). The role fills it at load; the guard rewrites the
 * entry whose `ip` changed its MAC (roles/bpfmap.py). */
struct skim_addr {
	__be32 ip;           /* network order: whose MAC this is */
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

#endif /* SKIM_H */
