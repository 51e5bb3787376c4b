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
	Dir     string    // work directory: data dirs, logs, Postfix configs
	Bouncer string    // bouncer binary
	Ingest  string    // bouncer-ingest binary
	Out     io.Writer // progress lines; io.Discard for none
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

// Build compiles ./cmd/bouncer and ./cmd/ingest of the module at root into
// dir and returns their paths.
func Build(ctx context.Context, root, dir string) (bouncer, ingest string, err error) {
	bouncer = filepath.Join(dir, "bouncer")
	ingest = filepath.Join(dir, "bouncer-ingest")
	for pkg, out := range map[string]string{"./cmd/bouncer": bouncer, "./cmd/ingest": ingest} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return bouncer, ingest, nil
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
