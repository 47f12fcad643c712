package restore

import "hash/crc64"

// An LTX file checksum is one CRC-64 (ISO) over the whole file, which would
// make the decoder's thread the bottleneck of a restore. CRCs combine: the
// CRC of A||B follows from crc(A), crc(B) and len(B), by running crc(A)
// through the linear operator "append len(B) zero bytes" (as zlib's
// crc32_combine does). So workers checksum runs of pages in parallel and the
// file checksum is folded from their results in file order.

var crcTable = crc64.MakeTable(crc64.ISO)

// gf2Mat is a 64x64 matrix over GF(2): column n is mat[n].
type gf2Mat [64]uint64

func (m *gf2Mat) apply(v uint64) uint64 {
	var sum uint64
	for i := 0; v != 0; i, v = i+1, v>>1 {
		if v&1 != 0 {
			sum ^= m[i]
		}
	}
	return sum
}

// compose returns a∘b.
func compose(a, b *gf2Mat) gf2Mat {
	var m gf2Mat
	for n := range m {
		m[n] = a.apply(b[n])
	}
	return m
}

// zeroBytesOp returns the operator that turns crc(A) into crc(A||0^n)
// modulo the constant part, for use in crcCombine.
func zeroBytesOp(n int64) gf2Mat {
	// One zero bit: the CRC register shifts right, folding in the
	// (reflected) polynomial when the low bit falls out.
	var bit gf2Mat
	bit[0] = crc64.ISO
	for i := 1; i < 64; i++ {
		bit[i] = 1 << (i - 1)
	}
	two := compose(&bit, &bit)
	four := compose(&two, &two)
	cur := compose(&four, &four) // one zero byte
	var op gf2Mat
	for i := range op {
		op[i] = 1 << i // identity
	}
	for n > 0 {
		if n&1 != 0 {
			op = compose(&cur, &op)
		}
		cur = compose(&cur, &cur)
		n >>= 1
	}
	return op
}

// crcCombine returns crc(A||B) from crc(A), crc(B) and the zero-byte
// operator of len(B).
func crcCombine(crcA, crcB uint64, opB *gf2Mat) uint64 {
	return opB.apply(crcA) ^ crcB
}

// crcFolder folds segment checksums in order, caching the operators of the
// segment lengths it meets (runs of pages mostly share one length).
type crcFolder struct {
	crc uint64
	ops map[int64]*gf2Mat
}

func (f *crcFolder) add(crc uint64, n int64) {
	if f.ops == nil {
		f.ops = map[int64]*gf2Mat{}
	}
	op, ok := f.ops[n]
	if !ok {
		m := zeroBytesOp(n)
		op = &m
		f.ops[n] = op
	}
	f.crc = crcCombine(f.crc, crc, op)
}
