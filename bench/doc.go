// Package bench holds side-by-side benchmarks of haita against peer
// libraries and raw engine commands. It is its own module so that the peers
// never enter the dependencies of github.com/haita/haita.
package bench
