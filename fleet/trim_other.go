//go:build !linux || !cgo

package fleet

func trimHeap() {}
