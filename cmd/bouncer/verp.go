package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bouncer-mail/bouncer/verp"
)

const verpUsage = `usage:
  bouncer verp sign --domain D --recipient R --message-id M [--prefix P] [--verp-keys-file FILE]
  bouncer verp verify [--validity 720h] [--verp-keys-file FILE] ADDRESS

sign prints a signed return path (VERP address). verify prints the token as
JSON and exits 0, or prints why it is refused (forged, expired, not a VERP
address) on stderr and exits 1. Keys come from --verp-keys-file (env
BOUNCER_VERP_KEYS_FILE; one per line) or else from BOUNCER_VERP_KEYS
(comma-separated); the first signs, all verify.
`

// verpResult is the output of `bouncer verp verify`.
type verpResult struct {
	Valid         bool   `json:"valid"`
	Domain        string `json:"domain"`
	Recipient     string `json:"recipient"` // "" when only its hash is carried
	RecipientHash string `json:"recipient_hash"`
	MessageIDHash string `json:"message_id_hash"`
	Day           string `json:"day"`     // signing day, YYYY-MM-DD (UTC)
	Expires       string `json:"expires"` // first instant it no longer verifies, RFC 3339
	KeyID         string `json:"key_id"`
}

// runVerp runs `bouncer verp sign|verify` and returns the exit status: 0 on
// success, 1 when verify refuses the address, 2 on a usage or key error.
func runVerp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, verpUsage)
		return 2
	}
	switch args[0] {
	case "sign":
		return runVerpSign(args[1:], stdout, stderr)
	case "verify":
		return runVerpVerify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, verpUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "bouncer verp: unknown command %q\n\n%s", args[0], verpUsage)
		return 2
	}
}

func runVerpSign(args []string, stdout, stderr io.Writer) int {
	fl := verpFlagSet("sign", stderr)
	domain := fl.String("domain", "", "bounce `domain` of the return path")
	recipient := fl.String("recipient", "", "recipient `address` of the message")
	messageID := fl.String("message-id", "", "`Message-ID` of the message (angle brackets optional)")
	prefix := fl.String("prefix", verp.DefaultPrefix, "local part before the + (a-z, 0-9, -, _)")
	keysFile := fl.String("verp-keys-file", os.Getenv("BOUNCER_VERP_KEYS_FILE"), "VERP keys `file`, one per line (env BOUNCER_VERP_KEYS_FILE; else env BOUNCER_VERP_KEYS)")
	rest, code := verpParse(fl, args)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "bouncer verp sign: unexpected argument %q\n", rest[0])
		return 2
	}
	for _, f := range []struct{ name, v string }{{"domain", *domain}, {"recipient", *recipient}, {"message-id", *messageID}} {
		if f.v == "" {
			fmt.Fprintf(stderr, "bouncer verp sign: --%s is required\n", f.name)
			return 2
		}
	}
	keys, err := verpKeys(*keysFile)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer verp sign: %v\n", err)
		return 2
	}
	s := &verp.Signer{Keys: keys, Prefix: *prefix}
	addr, err := s.Sign(*domain, *recipient, *messageID)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer verp sign: %v\n", err)
		return 2
	}
	fmt.Fprintln(stdout, addr)
	return 0
}

func runVerpVerify(args []string, stdout, stderr io.Writer) int {
	fl := verpFlagSet("verify", stderr)
	validity := fl.Duration("validity", verp.DefaultValidity, "how long a return path verifies (whole days, rounded up)")
	keysFile := fl.String("verp-keys-file", os.Getenv("BOUNCER_VERP_KEYS_FILE"), "VERP keys `file`, one per line (env BOUNCER_VERP_KEYS_FILE; else env BOUNCER_VERP_KEYS)")
	rest, code := verpParse(fl, args)
	if code >= 0 {
		return code
	}
	if len(rest) != 1 {
		fmt.Fprintf(stderr, "bouncer verp verify: want one ADDRESS, got %d arguments\n", len(rest))
		return 2
	}
	if *validity <= 0 || *validity > verp.MaxValidity {
		fmt.Fprintf(stderr, "bouncer verp verify: --validity %v is out of range (0, %v]\n", *validity, verp.MaxValidity)
		return 2
	}
	keys, err := verpKeys(*keysFile)
	if err != nil {
		fmt.Fprintf(stderr, "bouncer verp verify: %v\n", err)
		return 2
	}
	s := &verp.Signer{Keys: keys, Validity: *validity}
	tok, err := s.Verify(rest[0])
	switch {
	case errors.Is(err, verp.ErrNotVERP), errors.Is(err, verp.ErrForged), errors.Is(err, verp.ErrExpired):
		fmt.Fprintf(stderr, "bouncer verp verify: %v\n", err)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "bouncer verp verify: %v\n", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(verpResult{
		Valid:         true,
		Domain:        tok.Domain,
		Recipient:     tok.Recipient,
		RecipientHash: tok.RecipientHash,
		MessageIDHash: tok.MessageIDHash,
		Day:           tok.Day.Format(time.DateOnly),
		Expires:       tok.Expires.Format(time.RFC3339),
		KeyID:         tok.KeyID,
	}); err != nil {
		fmt.Fprintf(stderr, "bouncer verp verify: writing output: %v\n", err)
		return 1
	}
	return 0
}

func verpFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("verp "+name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, verpUsage+"\nflags of "+name+":\n")
		fl.PrintDefaults()
	}
	return fl
}

// verpParse parses flags placed before, between or after the positional
// arguments and returns the positional ones; code is -1 to go on, otherwise
// the exit status (0 after -h). After "--" everything is positional.
func verpParse(fl *flag.FlagSet, args []string) (rest []string, code int) {
	for {
		if err := fl.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		left := fl.Args()
		if len(left) == 0 {
			return rest, -1
		}
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			return append(rest, left...), -1
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// verpKeys loads the VERP keys: from file when it is set (--verp-keys-file
// or env BOUNCER_VERP_KEYS_FILE), else from env BOUNCER_VERP_KEYS.
func verpKeys(file string) (verp.Keys, error) {
	if file != "" {
		return verp.LoadKeysFile(file)
	}
	env, ok := os.LookupEnv("BOUNCER_VERP_KEYS")
	if !ok || env == "" {
		return verp.Keys{}, errors.New("no VERP keys: set BOUNCER_VERP_KEYS (comma-separated) or --verp-keys-file")
	}
	keys, err := verp.ParseKeys(env)
	if err != nil {
		return verp.Keys{}, fmt.Errorf("BOUNCER_VERP_KEYS: %w", err)
	}
	return keys, nil
}
