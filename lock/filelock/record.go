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
// A token is epoch<<counterBits | counter. Key records are written without
// fsync. The directory keeps one more record, in the file "epoch" (never a
// key's name: those start with "k-" or "h-"), whose token field holds the
// directory's epoch: the first Locker created after each boot raises it by
// one and fsyncs it (file and directory). A key first taken in a boot starts
// at the directory's epoch with counter 1; later holders in the same boot
// increment the counter. After a power loss a key file may have lost counter
// increments (or vanished), but the directory's epoch survived, and the next
// boot raises it above every token handed out before: tokens strictly
// increase for two fsyncs per directory per boot. A counter that runs out
// raises the directory's epoch the same way.
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

// next returns the token to hand out after prev, given the current boot id
// and the directory's epoch for this boot (see backend.epoch). sync reports
// that the new record must reach the disk before the token is handed out;
// bump that a new directory epoch above the returned token's epoch is
// needed first (the key's counter ran out, or its epoch is not below the
// directory's): then call next again with the new epoch. bootID "" means
// unknown: a reboot cannot be detected, so every token is synced.
func next(prev record, bootID string, dirEpoch uint64) (tok uint64, sync, bump bool, err error) {
	epoch, counter := prev.token>>counterBits, prev.token&counterMask
	switch {
	case bootID == "":
		sync = true
		counter++
		if counter > counterMask {
			epoch, counter = epoch+1, 1
		}
	case prev.token == 0 || prev.boot != bootID:
		// First use in this boot: the directory's epoch, raised and synced
		// once per boot, is above every token of earlier boots.
		if epoch >= dirEpoch {
			return 0, false, true, nil
		}
		epoch, counter = dirEpoch, 1
	default:
		counter++
		if counter > counterMask {
			// A directory epoch raised in this boot (and synced) is above
			// every token of the key so far.
			if epoch >= dirEpoch {
				return 0, false, true, nil
			}
			epoch, counter = dirEpoch, 1
		}
	}
	if epoch > maxEpoch {
		return 0, false, false, errors.New("fencing tokens exhausted")
	}
	return epoch<<counterBits | counter, sync, false, nil
}
