// Test target with a known CPU profile, in Go: 75% of its work in
// main.hotA (main.main -> main.run -> main.hotA) and 25% in main.hotB,
// whose loops call main.mix, which the compiler inlines. Calling mark
// keeps the hot functions non-leaf, so they have a frame (pointer) of
// their own, as in ratio.c. Usage: ratio [seconds]
package main

import (
	"os"
	"strconv"
	"time"
)

var sink uint64

func mix(i uint64) uint64 {
	return i*i ^ (i >> 3)
}

//go:noinline
func mark() { sink++ }

//go:noinline
func hotA(n uint64) {
	for i := uint64(0); i < n; i++ {
		sink += mix(i)
	}
	mark()
}

//go:noinline
func hotB(n uint64) {
	for i := uint64(0); i < n; i++ {
		sink += mix(i)
	}
	mark()
}

//go:noinline
func run(d time.Duration) {
	const unit = 200000
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		hotA(unit)
		hotB(unit)
		hotA(unit)
		hotA(unit)
	}
}

func main() {
	secs := 3600.0
	if len(os.Args) > 1 {
		if s, err := strconv.ParseFloat(os.Args[1], 64); err == nil {
			secs = s
		}
	}
	run(time.Duration(secs * float64(time.Second)))
}
