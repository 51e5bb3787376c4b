package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/dsn"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/bouncer-mail/bouncer/mbox"
	"github.com/bouncer-mail/bouncer/rules"
)

// classifyResult is one output line of `bouncer classify`: the fixed contract
// of DESIGN.md.
type classifyResult struct {
	File   string        `json:"file"`
	Events []event.Event `json:"events"`
	Error  string        `json:"error,omitempty"`
}

func runClassify(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("classify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	rulesPath := fl.String("rules", os.Getenv("BOUNCER_RULES"), "extra rules `file` overriding the embedded defaults (env BOUNCER_RULES)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: bouncer classify [--rules FILE] [FILE|DIR|-]...")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	rs, err := loadRules(*rulesPath)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer classify: %v\n", err)
		return 2
	}
	paths := fl.Args()
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	cl := classify.New(rs)
	status := 0
	emit := func(r classifyResult) {
		if r.Events == nil {
			r.Events = []event.Event{}
		}
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "bouncer classify: writing output: %v\n", err)
			status = 1
		}
	}
	for _, p := range paths {
		if p == "-" {
			classifyStream(cl, "-", stdin, emit)
			continue
		}
		files, err := expand(p)
		if err != nil {
			fmt.Fprintf(stderr, "bouncer classify: %v\n", err)
			status = 1
			continue
		}
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintf(stderr, "bouncer classify: %v\n", err)
				status = 1
				continue
			}
			classifyStream(cl, name, f, emit)
			f.Close()
		}
	}
	return status
}

func loadRules(path string) (*rules.Set, error) {
	if path == "" {
		return rules.Default()
	}
	return rules.Load(path)
}

// expand returns p itself, or every regular file below the directory p in
// lexical order.
func expand(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

// classifyStream classifies the message in r, or each message when r is an
// mbox, and emits one result per message.
func classifyStream(cl *classify.Classifier, name string, r io.Reader, emit func(classifyResult)) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(5)
	if !mbox.IsMbox(head) {
		evs, err := cl.Parse(br)
		emit(resultOf(name, evs, err))
		return
	}
	mr := mbox.NewReader(br, int(dsn.MaxSize))
	for n := 1; ; n++ {
		msg, err := mr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		label := fmt.Sprintf("%s#%d", name, n)
		if err != nil {
			emit(classifyResult{File: label, Error: err.Error()})
			if !errors.Is(err, mbox.ErrTooLarge) {
				return
			}
			continue
		}
		evs, err := cl.Bytes(msg)
		emit(resultOf(label, evs, err))
	}
}

func resultOf(name string, evs []event.Event, err error) classifyResult {
	r := classifyResult{File: name, Events: evs}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
