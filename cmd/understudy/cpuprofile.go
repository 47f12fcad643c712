package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of the whole run to the file named
// by UNDERSTUDY_CPUPROFILE, for `go tool pprof` (the bench's start-up
// figures were found this way); the returned function ends it.
func startCPUProfile() func() {
	p := os.Getenv("UNDERSTUDY_CPUPROFILE")
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "understudy: UNDERSTUDY_CPUPROFILE=%s: %v\n", p, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "understudy: UNDERSTUDY_CPUPROFILE=%s: %v\n", p, err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
