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
	br := bufio.NewReaderSize(r, 64<<10)
	if head, _ := br.Peek(4096); crOnly(head) {
		// An old Mac mbox: lines end in a bare CR.
		br = bufio.NewReaderSize(&crReader{r: br}, 64<<10)
	}
	return &Reader{br: br, max: max}
}

// crOnly reports whether b ends its lines with bare CRs: it holds a CR and
// no LF.
func crOnly(b []byte) bool {
	return bytes.IndexByte(b, '\r') >= 0 && bytes.IndexByte(b, '\n') < 0
}

// crReader turns bare CRs into LFs.
type crReader struct{ r io.Reader }

func (c *crReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == '\r' {
			p[i] = '\n'
		}
	}
	return n, err
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
	separated := false
	for {
		line, err := r.readLine()
		if len(line) == 0 && err != nil {
			r.done = true
			break
		}
		if prevBlank && bytes.HasPrefix(line, []byte("From ")) {
			separated = true
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
	if separated {
		// The blank line before a separator belongs to the mbox, not the
		// message.
		if bytes.HasSuffix(msg, []byte("\r\n\r\n")) {
			msg = msg[:len(msg)-2]
		} else if bytes.HasSuffix(msg, []byte("\n\n")) {
			msg = msg[:len(msg)-1]
		}
	}
	if len(msg) > 0 && msg[len(msg)-1] != '\n' {
		msg = append(msg, '\n')
	}
	return msg, nil
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
