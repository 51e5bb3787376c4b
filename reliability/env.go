package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Env is what every scenario runs in: a work directory and the binaries
// under test.
type Env struct {
	Dir string // work directory: data dirs, logs, Postfix configs
	Binaries
	Out io.Writer // progress lines; nil for none
}

// Binaries are the programs under test.
type Binaries struct {
	Bouncer string // ./cmd/bouncer
	Ingest  string // ./cmd/ingest
	NATS    string // nats-server, the version this module requires
}

// logf writes one progress line.
func (e *Env) logf(format string, args ...any) {
	if e.Out != nil {
		fmt.Fprintf(e.Out, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
	}
}

// subdir makes a fresh directory under the work directory, readable by the
// service users (postfix, clickhouse) that the harness runs peers as.
func (e *Env) subdir(name string) (string, error) {
	d, err := os.MkdirTemp(e.Dir, name+"-")
	if err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}

// Build compiles ./cmd/bouncer, ./cmd/ingest and the nats-server of the
// module at root (its main package comes with the module's dependency on
// nats-server/v2) into dir.
func Build(ctx context.Context, root, dir string) (Binaries, error) {
	b := Binaries{
		Bouncer: filepath.Join(dir, "bouncer"),
		Ingest:  filepath.Join(dir, "bouncer-ingest"),
		NATS:    filepath.Join(dir, "nats-server"),
	}
	for pkg, out := range map[string]string{"./cmd/bouncer": b.Bouncer, "./cmd/ingest": b.Ingest, "github.com/nats-io/nats-server/v2": b.NATS} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return b, nil
}

// ModuleRoot finds the directory holding this module's go.mod, walking up
// from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/bouncer-mail/bouncer\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the bouncer module: run from the repository (go.mod of github.com/bouncer-mail/bouncer)")
		}
		dir = parent
	}
}
