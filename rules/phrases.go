package rules

import (
	"math/bits"
	"slices"
)

// phraseIndex finds which of a fixed list of phrases occur in a text in
// one pass over the text, however many phrases there are: an Aho–Corasick
// automaton (Aho and Corasick, "Efficient string matching: an aid to
// bibliographic search", CACM 18(6), 1975) compiled to a transition table.
// Each phrase carries an id (a rule's number); scan reports an id when any
// of its phrases occurs, byte for byte what strings.Contains would say.
type phraseIndex struct {
	// class maps a byte to its column in next; bytes in no phrase share
	// column 0, which leads back towards the root from every state.
	class  [256]uint16
	nclass int
	// next[row+class] is the row of the state reached (a state's row is
	// its number times nclass), complemented (^row) when that state ends
	// a phrase, so the scan looks up outputs only where there are some.
	next []int32
	// The ids of the phrases ending at state st, its suffixes' included,
	// each once: out[outAt[st]:outAt[st+1]].
	outAt []int32
	out   []int32
	// always holds the ids of empty phrases, which every text contains.
	always []int32
	ids    int // ids are 0 to ids-1
}

// newPhraseIndex builds the automaton of phrases[i], each with the id
// ids[i]; n is one more than the largest id.
func newPhraseIndex(phrases []string, ids []int32, n int) *phraseIndex {
	ix := &phraseIndex{ids: n}
	var seen [256]bool
	for _, p := range phrases {
		for i := 0; i < len(p); i++ {
			seen[p[i]] = true
		}
	}
	ix.nclass = 1
	for b := range seen {
		if seen[b] {
			ix.class[b] = uint16(ix.nclass)
			ix.nclass++
		}
	}
	nc := ix.nclass

	// The trie: next holds child rows, -1 where there is none yet.
	newState := func() int32 {
		row := int32(len(ix.next))
		for range nc {
			ix.next = append(ix.next, -1)
		}
		return row
	}
	newState() // the root, row 0
	ends := [][]int32{nil}
	for i, p := range phrases {
		if p == "" {
			ix.always = append(ix.always, ids[i])
			continue
		}
		row := int32(0)
		for j := 0; j < len(p); j++ {
			k := row + int32(ix.class[p[j]])
			if ix.next[k] < 0 {
				ix.next[k] = newState()
				ends = append(ends, nil)
			}
			row = ix.next[k]
		}
		st := row / int32(nc)
		ends[st] = append(ends[st], ids[i])
	}
	slices.Sort(ix.always)
	ix.always = slices.Compact(ix.always)

	// Breadth first, so a state's failure link (the state of its longest
	// proper suffix in the trie) is complete before the state is: fill
	// the missing transitions from the failure state's, and add its
	// outputs to the state's own.
	states := len(ends)
	fail := make([]int32, states)
	queue := make([]int32, 0, states)
	for c := range nc {
		if child := ix.next[c]; child < 0 {
			ix.next[c] = 0
		} else {
			fail[child/int32(nc)] = 0
			queue = append(queue, child)
		}
	}
	for len(queue) > 0 {
		row := queue[0]
		queue = queue[1:]
		st := row / int32(nc)
		f := fail[st]
		ends[st] = append(ends[st], ends[f]...)
		fRow := f * int32(nc)
		for c := range int32(nc) {
			if child := ix.next[row+c]; child < 0 {
				ix.next[row+c] = ix.next[fRow+c]
			} else {
				fail[child/int32(nc)] = ix.next[fRow+c] / int32(nc)
				queue = append(queue, child)
			}
		}
	}

	ix.outAt = make([]int32, states+1)
	for st, e := range ends {
		slices.Sort(e)
		e = slices.Compact(e)
		ix.out = append(ix.out, e...)
		ix.outAt[st+1] = int32(len(ix.out))
	}
	for k, row := range ix.next {
		if st := row / int32(nc); ix.outAt[st+1] > ix.outAt[st] {
			ix.next[k] = ^row
		}
	}
	return ix
}

// scan sets bit id of found (id/64 in word, id%64 in bit) for every id
// with a phrase occurring in text; found must hold ix.ids bits. It sets
// no bit it need not, and clears none.
func (ix *phraseIndex) scan(text string, found []uint64) {
	for _, id := range ix.always {
		found[id>>6] |= 1 << (id & 63)
	}
	next, class := ix.next, &ix.class
	row := int32(0)
	for i := 0; i < len(text); i++ {
		row = next[row+int32(class[text[i]])]
		if row < 0 {
			row = ^row
			st := row / int32(ix.nclass)
			for _, id := range ix.out[ix.outAt[st]:ix.outAt[st+1]] {
				found[id>>6] |= 1 << (id & 63)
			}
		}
	}
}

// maxPhraseBytes bounds the reason rules' phrases, all together, so the
// automaton's rows (states times classes, at most 257) fit in an int32.
// The default rules hold some 16 kB.
const maxPhraseBytes = 1 << 22

// Phrases is a fixed list of phrases looked for in a text in one pass
// over it, each compared byte for byte as strings.Contains compares. It is
// safe for concurrent use.
type Phrases struct {
	ix *phraseIndex
	n  int
}

// NewPhrases returns the list phrases, in its order.
func NewPhrases(phrases ...string) *Phrases {
	ids := make([]int32, len(phrases))
	for i := range ids {
		ids[i] = int32(i)
	}
	return &Phrases{ix: newPhraseIndex(phrases, ids, len(phrases)), n: len(phrases)}
}

// First returns the number of the first phrase of the list that occurs
// in text, or -1 when none does: what trying strings.Contains phrase by
// phrase and stopping at the first hit returns.
func (p *Phrases) First(text string) int {
	var buf [4]uint64
	found := buf[:]
	if n := (p.n + 63) / 64; n > len(buf) {
		found = make([]uint64, n)
	}
	p.ix.scan(text, found)
	for w, word := range found {
		if word != 0 {
			return w*64 + bits.TrailingZeros64(word)
		}
	}
	return -1
}
