package store

import (
	"encoding/binary"
	"slices"
	"strings"
	"time"

	"github.com/bouncer-mail/bouncer/event"
)

// Records. A record is an address's versions, one per stream, in stream
// order:
//
//	record  = uvarint(len(address)) address uvarint(n) n × (uvarint(len(version)) version)
//	version = str(stream) flags varint(updated) [str(source) str(class) str(reason)
//	          str(rule) str(actor) note varint(since) [varint(until)]]
//	note    = str(note) | str(before the address) str(after it)
//	str     = uvarint(0) uvarint(len) bytes | uvarint(1 + number in the string table)
//
// The bracketed fields are absent in a removal; until is there when
// flags has versionUntil, the note split around the address when it has
// versionNoteAddress. Times are Unix nanoseconds.
const (
	versionRemoved = 1 << iota
	versionUntil
	versionNoteAddress
)

// maxInterned bounds the string table: past it, strings are inline.
const maxInterned = 1 << 16

// interner is the string table records name strings by. It only grows,
// until a full read starts a new one; a base keeps the slice it was
// built with, which later appends do not change.
type interner struct {
	ids  map[string]uint32
	strs []string
	size int // bytes of strs
}

func newInterner() *interner { return &interner{ids: map[string]uint32{}} }

// appendStr appends str(s), from the table when in is not nil.
func (in *interner) appendStr(b []byte, s string) []byte {
	if in != nil {
		id, ok := in.ids[s]
		if !ok && len(in.strs) < maxInterned {
			id, ok = uint32(len(in.strs)), true
			in.ids[s], in.strs, in.size = id, append(in.strs, s), in.size+len(s)
		}
		if ok {
			return binary.AppendUvarint(b, uint64(id)+1)
		}
	}
	b = binary.AppendUvarint(b, 0)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendVersion appends v's version encoding (without its length).
func appendVersion(b []byte, in *interner, v SuppressionVersion) []byte {
	var flags byte
	before, after, split := "", "", false
	if v.Removed {
		flags |= versionRemoved
	} else {
		if !v.Until.IsZero() {
			flags |= versionUntil
		}
		if i := strings.Index(v.Note, v.Address); v.Address != "" && i >= 0 {
			flags |= versionNoteAddress
			before, after, split = v.Note[:i], v.Note[i+len(v.Address):], true
		}
	}
	b = in.appendStr(b, v.Stream)
	b = append(b, flags)
	b = binary.AppendVarint(b, v.Updated.UnixNano())
	if v.Removed {
		return b
	}
	for _, s := range []string{v.Source, string(v.Class), string(v.Reason), v.Rule, v.Actor} {
		b = in.appendStr(b, s)
	}
	if split {
		b = in.appendStr(in.appendStr(b, before), after)
	} else {
		b = in.appendStr(b, v.Note)
	}
	b = binary.AppendVarint(b, v.Since.UnixNano())
	if flags&versionUntil != 0 {
		b = binary.AppendVarint(b, v.Until.UnixNano())
	}
	return b
}

// appendRecord appends address's record of vs (in stream order).
func appendRecord(b []byte, address string, vs []recVersion) []byte {
	b = binary.AppendUvarint(b, uint64(len(address)))
	b = append(b, address...)
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, v := range vs {
		b = binary.AppendUvarint(b, uint64(len(v.body)))
		b = append(b, v.body...)
	}
	return b
}

// recVersion is one version of a record, still encoded.
type recVersion struct {
	stream  string
	updated int64
	body    []byte
	dict    []string
}

// decoder reads an encoding the filter wrote; past its end it reads
// zeros.
type decoder struct {
	b    []byte
	dict []string
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.b = nil
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) str() string {
	if id := d.uvarint(); id > 0 {
		if id-1 < uint64(len(d.dict)) {
			return d.dict[id-1]
		}
		return ""
	}
	return string(d.bytes())
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// recordAddress returns a record's address, in the record.
func recordAddress(rec []byte) []byte {
	d := decoder{b: rec}
	return d.bytes()
}

// recordIs reports whether rec is address's record.
func recordIs(rec []byte, address string) bool { return string(recordAddress(rec)) == address }

// recordLen returns the length of the record rec begins with.
func recordLen(rec []byte) int {
	d := decoder{b: rec}
	d.bytes()
	for n := d.uvarint(); n > 0; n-- {
		d.bytes()
	}
	return len(rec) - len(d.b)
}

// recordVersions returns how many versions a record holds.
func recordVersions(rec []byte) int {
	d := decoder{b: rec}
	d.bytes()
	return int(d.uvarint())
}

// parseRecord splits a record into its versions; nil for none.
func parseRecord(rec []byte, dict []string) []recVersion {
	if len(rec) == 0 {
		return nil
	}
	d := decoder{b: rec, dict: dict}
	d.bytes()
	n := d.uvarint()
	vs := make([]recVersion, 0, n)
	for ; n > 0; n-- {
		body := d.bytes()
		vd := decoder{b: body, dict: dict}
		stream := vd.str()
		vd.byte()
		vs = append(vs, recVersion{stream: stream, updated: vd.varint(), body: body, dict: dict})
	}
	return vs
}

// findStream returns the version of stream in vs (in stream order).
func findStream(vs []recVersion, stream string) (recVersion, bool) {
	i, found := slices.BinarySearchFunc(vs, stream, func(r recVersion, s string) int { return strings.Compare(r.stream, s) })
	if !found {
		return recVersion{}, false
	}
	return vs[i], true
}

// mergeVersions merges two stream-ordered version lists, keeping per
// stream the later Updated (a's on a tie).
func mergeVersions(a, b []recVersion) []recVersion {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]recVersion, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := strings.Compare(a[i].stream, b[j].stream); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			if b[j].updated > a[i].updated {
				out = append(out, b[j])
			} else {
				out = append(out, a[i])
			}
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// decode returns the suppression a version holds, of address, and
// whether it is a removal.
func (v recVersion) decode(address string) (Suppression, bool) {
	d := decoder{b: v.body, dict: v.dict}
	s := Suppression{Address: address, Stream: d.str()}
	flags := d.byte()
	s.Updated = time.Unix(0, d.varint()).UTC()
	if flags&versionRemoved != 0 {
		return s, true
	}
	s.Source = d.str()
	s.Class = event.Class(d.str())
	s.Reason = event.Reason(d.str())
	s.Rule, s.Actor = d.str(), d.str()
	if flags&versionNoteAddress != 0 {
		before := d.str()
		s.Note = before + address + d.str()
	} else {
		s.Note = d.str()
	}
	s.Since = time.Unix(0, d.varint()).UTC()
	if flags&versionUntil != 0 {
		s.Until = time.Unix(0, d.varint()).UTC()
	}
	return s, false
}
