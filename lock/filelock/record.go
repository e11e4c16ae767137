package filelock

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// A lock file holds one line of text, written at offset 0 by every holder
// right after flock succeeds:
//
//	haita-filelock 1 token=1099511627777 boot=a8ece10f46bb4530a0be89be92312542 pid=812 holder="api-3" crc=1c291ca3
//
// token is the last fencing token handed out, boot the kernel boot id when it
// was written, pid and holder name the process that took it (for people and
// for [lock.HeldError]), crc the CRC-32 (IEEE) of everything before " crc=".
// A shorter line is padded with spaces to the previous length, so no stale
// text follows it.
//
// A token is epoch<<counterBits | counter. The epoch is written with fsync
// (file and directory) the first time a key is taken after each boot, and
// when the counter runs out; the counter alone is written without fsync.
// After a power loss the file may have lost counter increments, but never the
// epoch of any token handed out, and the new boot starts a higher epoch: the
// tokens still strictly increase, for one fsync per key per boot.
const (
	recordMagic = "haita-filelock 1 "
	counterBits = 40
	counterMask = 1<<counterBits - 1
	maxEpoch    = 1<<(64-counterBits) - 1
	maxRecord   = 4096 // a record is at most ~1.2 KB: the holder is at most 256 bytes
)

type record struct {
	token  uint64
	boot   string
	pid    int
	holder string
}

var errCorrupt = errors.New("not a valid haita-filelock record")

func (r record) marshal(padTo int) []byte {
	line := fmt.Sprintf("%stoken=%d boot=%s pid=%d holder=%s", recordMagic, r.token, r.boot, r.pid, strconv.QuoteToASCII(r.holder))
	line = fmt.Sprintf("%s crc=%08x", line, crc32.ChecksumIEEE([]byte(line)))
	if pad := padTo - len(line) - 1; pad > 0 {
		line += strings.Repeat(" ", pad)
	}
	return []byte(line + "\n")
}

// parseRecord parses the file's content. Empty content is the zero record: a
// file whose first record never reached the disk has handed out no token,
// because tokens are handed out only after that record's fsync.
func parseRecord(b []byte) (record, error) {
	if len(b) == 0 {
		return record{}, nil
	}
	s := string(b)
	line, _, ok := strings.Cut(s, "\n")
	if !ok {
		return record{}, fmt.Errorf("%w: no end of line", errCorrupt)
	}
	line = strings.TrimRight(line, " ")
	i := strings.LastIndex(line, " crc=")
	if i < 0 {
		return record{}, fmt.Errorf("%w: no crc", errCorrupt)
	}
	sum, err := strconv.ParseUint(line[i+len(" crc="):], 16, 32)
	if err != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(line[:i])) {
		return record{}, fmt.Errorf("%w: crc mismatch", errCorrupt)
	}
	rest, ok := strings.CutPrefix(line[:i], recordMagic+"token=")
	if !ok {
		return record{}, fmt.Errorf("%w: unknown format", errCorrupt)
	}
	var r record
	tok, rest, ok1 := strings.Cut(rest, " boot=")
	boot, rest, ok2 := strings.Cut(rest, " pid=")
	pid, holder, ok3 := strings.Cut(rest, " holder=")
	if !ok1 || !ok2 || !ok3 {
		return record{}, fmt.Errorf("%w: missing field", errCorrupt)
	}
	if r.token, err = strconv.ParseUint(tok, 10, 64); err != nil {
		return record{}, fmt.Errorf("%w: token: %v", errCorrupt, err)
	}
	if r.pid, err = strconv.Atoi(pid); err != nil {
		return record{}, fmt.Errorf("%w: pid: %v", errCorrupt, err)
	}
	if r.holder, err = strconv.Unquote(holder); err != nil {
		return record{}, fmt.Errorf("%w: holder: %v", errCorrupt, err)
	}
	r.boot = boot
	return r, nil
}

// next returns the token to hand out after prev, and whether the new record
// must reach the disk (fsync) before the token is handed out: when the
// epoch changes. bootID is the current boot id, "" when unknown (then every
// token is synced, since a reboot cannot be detected).
func next(prev record, bootID string) (tok uint64, sync bool, err error) {
	epoch, counter := prev.token>>counterBits, prev.token&counterMask
	switch {
	case bootID == "":
		sync = true
		counter++
	case prev.token == 0 || prev.boot != bootID:
		sync = true
		epoch, counter = epoch+1, 1
	default:
		counter++
	}
	if counter > counterMask {
		sync = true
		epoch, counter = epoch+1, 1
	}
	if epoch > maxEpoch {
		return 0, false, errors.New("fencing tokens exhausted")
	}
	return epoch<<counterBits | counter, sync, nil
}
