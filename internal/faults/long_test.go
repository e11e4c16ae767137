//go:build faultslong

package faults

func init() { longBuild = true }
