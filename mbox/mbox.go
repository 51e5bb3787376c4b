// Package mbox splits a Unix mbox file (RFC 4155, application/mbox) into
// messages. Lines "From " at the start of a line that follows a blank line
// (or begins the file) separate messages; mboxrd-quoted lines (">From ",
// ">>From ") lose one '>'.
package mbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned by Next for a message over the reader's limit.
// The rest of that message is skipped, so Next can continue with the
// following one.
var ErrTooLarge = errors.New("mbox: message too large")

// IsMbox reports whether b, the start of a file, looks like an mbox: its
// first line begins with "From ".
func IsMbox(b []byte) bool {
	return bytes.HasPrefix(b, []byte("From "))
}

// Reader reads messages from an mbox.
type Reader struct {
	br      *bufio.Reader
	max     int
	started bool
	done    bool
}

// NewReader returns a Reader of r whose messages may be at most max bytes
// (max <= 0: 32 MiB).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = 32 << 20
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Next returns the next message without its "From " separator line, or
// io.EOF after the last one.
func (r *Reader) Next() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	if !r.started {
		r.started = true
		line, err := r.readLine()
		if err != nil && len(line) == 0 {
			r.done = true
			return nil, io.EOF
		}
		if !bytes.HasPrefix(line, []byte("From ")) {
			r.done = true
			return nil, fmt.Errorf("mbox: first line is not a \"From \" separator")
		}
	}
	var msg []byte
	over := false
	prevBlank := true
	for {
		line, err := r.readLine()
		if len(line) == 0 && err != nil {
			r.done = true
			break
		}
		if prevBlank && bytes.HasPrefix(line, []byte("From ")) {
			break
		}
		prevBlank = len(bytes.TrimRight(line, "\r\n")) == 0
		line = unquote(line)
		if !over && len(msg)+len(line) > r.max {
			over = true
			msg = nil
		}
		if !over {
			msg = append(msg, line...)
		}
		if err != nil {
			r.done = true
			break
		}
	}
	if over {
		return nil, ErrTooLarge
	}
	// The blank line before a separator belongs to the mbox, not the message.
	msg = bytes.TrimSuffix(msg, []byte("\n"))
	msg = bytes.TrimSuffix(msg, []byte("\r"))
	return append(msg, '\n'), nil
}

// readLine returns one line with its newline; a line longer than the buffer
// comes back whole.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		buf := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = r.br.ReadSlice('\n')
			buf = append(buf, line...)
			if len(buf) > r.max+1 {
				// Keep reading to the end of the line but stop growing.
				buf = buf[:r.max+1]
			}
		}
		return buf, err
	}
	return line, err
}

// unquote removes one '>' from a mboxrd-quoted "From " line.
func unquote(line []byte) []byte {
	i := 0
	for i < len(line) && line[i] == '>' {
		i++
	}
	if i > 0 && bytes.HasPrefix(line[i:], []byte("From ")) {
		return line[1:]
	}
	return line
}
