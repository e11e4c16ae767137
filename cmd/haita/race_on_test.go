//go:build race

package main

// raceEnabled reports whether the test binary has the race detector, so
// that a binary the tests build has it too.
const raceEnabled = true
