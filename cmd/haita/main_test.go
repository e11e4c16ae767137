package main

import (
	"testing"

	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }
