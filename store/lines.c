/*
 * Counting the line ends of an append, and whether any line may name an
 * ID: one pass over the buffer, 32 or 16 bytes at a time.  A buffer of 64
 * KiB of lines took one memchr(3) call per line and a look at each line's
 * first byte, about 40,000 instructions (docs/BENCHMARKS.md); a line that
 * cannot hold an ID needs none of that, only to be counted.
 */
#include <string.h>

#include "store_int.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2,popcnt")))
static inline size_t ends_avx2(__m256i v, unsigned mask)
{
	__m256i nl = _mm256_set1_epi8('\n');

	return (size_t)__builtin_popcount(
		(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, nl)) & mask);
}

/* 64 bytes a turn; the line ends are summed in 8-bit lanes, two a turn,
 * for up to 127 turns before _mm256_sad_epu8 adds the lanes up. */
__attribute__((target("avx2,popcnt")))
static size_t scan_avx2(const char *p, size_t len, size_t *count, bool *quote)
{
	const __m256i nl = _mm256_set1_epi8('\n'), qt = _mm256_set1_epi8('"');
	const __m256i zero = _mm256_setzero_si256();
	const char *q = p, *stop = p + len / 64 * 64;
	__m256i anyq = zero;
	size_t n = 0, i;

	while (q < stop) {
		const char *end = stop - q > 127 * 64 ? q + 127 * 64 : stop;
		__m256i ends = zero, sums;

		for (; q < end; q += 64) {
			__m256i a = _mm256_loadu_si256((const __m256i *)q);
			__m256i b = _mm256_loadu_si256((const __m256i *)(q + 32));

			ends = _mm256_sub_epi8(ends, _mm256_cmpeq_epi8(a, nl));
			ends = _mm256_sub_epi8(ends, _mm256_cmpeq_epi8(b, nl));
			anyq = _mm256_or_si256(anyq, _mm256_or_si256(
				_mm256_cmpeq_epi8(a, qt), _mm256_cmpeq_epi8(b, qt)));
		}
		sums = _mm256_sad_epu8(ends, zero);
		n += (size_t)_mm256_extract_epi64(sums, 0) +
		     (size_t)_mm256_extract_epi64(sums, 1) +
		     (size_t)_mm256_extract_epi64(sums, 2) +
		     (size_t)_mm256_extract_epi64(sums, 3);
	}
	i = (size_t)(q - p);
	if (i + 32 <= len) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(p + i));

		n += ends_avx2(v, ~0u);
		anyq = _mm256_or_si256(anyq, _mm256_cmpeq_epi8(v, qt));
		i += 32;
	}
	if (i < len && len >= 32) {
		/* the last 32 bytes, of which only the last LEN - I are new */
		__m256i v = _mm256_loadu_si256((const __m256i *)(p + len - 32));

		n += ends_avx2(v, ~0u << (32 - (len - i)));
		anyq = _mm256_or_si256(anyq, _mm256_cmpeq_epi8(v, qt));
		i = len;
	}
	*count += n;
	*quote |= !_mm256_testz_si256(anyq, anyq);
	return i;
}

/* Byte counts are summed 255 blocks at a time: a lane of 8 bits counts up
 * to 255 before _mm_sad_epu8 adds them up. */
#define BLOCKS_MAX 255

/* SSE2: every x86-64 has it. */
static size_t scan_sse2(const char *p, size_t len, size_t *count, bool *quote)
{
	const __m128i nl = _mm_set1_epi8('\n'), qt = _mm_set1_epi8('"');
	const __m128i zero = _mm_setzero_si128();
	__m128i anyq = zero;
	size_t i = 0, n = 0;

	while (i + 16 <= len) {
		__m128i ends = zero, sums;

		for (unsigned k = 0; k < BLOCKS_MAX && i + 16 <= len; k++, i += 16) {
			__m128i v = _mm_loadu_si128((const __m128i *)(p + i));

			ends = _mm_sub_epi8(ends, _mm_cmpeq_epi8(v, nl));
			anyq = _mm_or_si128(anyq, _mm_cmpeq_epi8(v, qt));
		}
		sums = _mm_sad_epu8(ends, zero);
		n += (size_t)_mm_cvtsi128_si64(sums) +
		     (size_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
	}
	*count += n;
	*quote |= _mm_movemask_epi8(anyq) != 0;
	return i;
}

static size_t scan_blocks(const char *p, size_t len, size_t *count,
			  bool *quote)
{
	if (__builtin_cpu_supports("avx2"))
		return scan_avx2(p, len, count, quote);
	return scan_sse2(p, len, count, quote);
}
#else
static size_t scan_blocks(const char *p, size_t len, size_t *count,
			  bool *quote)
{
	(void)p, (void)len, (void)count, (void)quote;
	return 0;	/* all of it byte by byte */
}
#endif

void store_lines_scan(const char *buf, size_t len, struct lines_scan *out)
{
	size_t i, count = 0;
	bool quote = false;
	const char *last;

	i = scan_blocks(buf, len, &count, &quote);
	for (; i < len; i++) {
		count += buf[i] == '\n';
		quote |= buf[i] == '"';
	}
	if (!count)
		last = NULL;
	else if (buf[len - 1] == '\n')
		last = buf + len - 1;	/* whole lines: most appends */
	else
		last = memrchr(buf, '\n', len);
	out->count = count;
	out->end = last ? (size_t)(last + 1 - buf) : 0;
	out->quote = quote;
}
