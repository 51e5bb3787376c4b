package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bouncer-mail/bouncer/broker"
	"github.com/bouncer-mail/bouncer/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStreamLeftovers: the ids of reports waiting in the stream are
// every report's, whether it travels alone or in a bundle, so a bundle
// still in the stream is counted as waiting, not as lost.
func TestStreamLeftovers(t *testing.T) {
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	envelope := func(i int) (event.Envelope, []byte) {
		raw := []byte(fmt.Sprintf("Subject: report %d\r\n\r\nbody\r\n", i))
		sum := sha256.Sum256(raw)
		return event.Envelope{ID: hex.EncodeToString(sum[:]), Recipients: []string{"b@bounces.example.com"}}, raw
	}
	var want []string
	alone, raw := envelope(0)
	pub := &broker.Publisher{JS: js}
	defer pub.Close()
	if err := pub.Publish(ctx, alone, raw); err != nil {
		t.Fatal(err)
	}
	want = append(want, alone.ID)
	var data []byte
	for i := 1; i <= 3; i++ {
		env, raw := envelope(i)
		hdr, _ := json.Marshal(env)
		data = binary.AppendUvarint(data, uint64(len(hdr)))
		data = append(data, hdr...)
		data = binary.AppendUvarint(data, uint64(len(raw)))
		data = append(data, raw...)
		want = append(want, env.ID)
	}
	m := &nats.Msg{Subject: broker.SubjectReports, Data: data, Header: nats.Header{broker.HeaderBundle: []string{"3"}}}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	got, err := StreamLeftovers(ctx, s.ClientURL(), 100)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("leftovers %v, want %v", got, want)
	}
}
