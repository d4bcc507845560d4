// Package deliverytest builds webhook deliveries of the Hugging Face Hub for tests: large ones, of generated
// content, in the shape the Hub sends.
package deliverytest

import (
	"bytes"
	"fmt"
	"strings"
)

// Bucket is a storage bucket's content update listing files changed files, in the shape the Hub sends
// (generated paths and hashes). 10,000 files, the most the Hub lists, make about 1.4 MB.
func Bucket(files int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"bucket","name":"acme/raw-uploads",` +
		`"id":"6712a0c4e1b2c3d4e5f60718","private":true,"url":{"web":"https://huggingface.co/buckets/acme/raw-uploads",` +
		`"api":"https://huggingface.co/api/buckets/acme/raw-uploads"},"owner":{"id":"62b1e8c7d4a3f2e1c0b9a8d7"}},"updatedFiles":[`)
	for i := range files {
		if i > 0 {
			b.WriteByte(',')
		}
		h := uint64(i+1) * 0x9e3779b97f4a7c15
		if i%50 == 49 {
			fmt.Fprintf(&b, `{"path":"shards/2026-08/stale-%05d.jsonl","action":"delete"}`, i)
			continue
		}
		fmt.Fprintf(&b, `{"path":"shards/2026-08/part-%05d.jsonl","action":"add","xetHash":"%016x%016x%016x%016x","size":%d}`,
			i, h*1, h*3, h*5, h*7, 1<<20+i)
	}
	b.WriteString(`],"updatedFilesTruncated":false,"webhook":{"id":"6650e8d1c2b3a4f5e6d7c8b9","version":3}}`)
	return b.Bytes()
}

// BucketOfSize is a Bucket delivery of exactly size bytes: as many files as fit, then whitespace.
func BucketOfSize(size int) []byte {
	per := len(Bucket(2)) - len(Bucket(1))
	files := (size - len(Bucket(0))) / per
	body := Bucket(files)
	for len(body) > size {
		files--
		body = Bucket(files)
	}
	pad := bytes.Repeat([]byte(" "), size-len(body))
	return append(body[:len(body)-1:len(body)-1], append(pad, '}')...)
}

// Edges returns hand-made webhook bodies at the edges of what a parser must take or refuse: not JSON, not an
// object, missing, null and mistyped members, repeated and differently cased names, NUL and control
// characters, invalid UTF-8, deep nesting. They seed the fuzzing of the parser beside the sample deliveries in
// testdata/deliveries.
func Edges() [][]byte {
	out := make([][]byte, len(edges))
	for i, s := range edges {
		out[i] = []byte(s)
	}
	return out
}

// edges are hand-made bodies at the edges of what a parser must take or refuse.
var edges = []string{
	``,
	` `,
	"\t\r\n",
	`null`,
	`true`,
	`0`,
	`"x"`,
	`[]`,
	`[{}]`,
	`{}`,
	`{"event":null,"repo":null}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":null}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[null]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":""}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","newSha":null}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + strings.Repeat("A", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":"x","newSha":"` + strings.Repeat("a", 40) + `"},{"ref":"refs/heads/main","newSha":"` + strings.Repeat("a", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets","id":"1"},"updatedRefs":[{"ref":"refs/pr/1","newSha":"` + strings.Repeat("b", 40) + `"},{"ref":"refs/heads/release-1","newSha":"` + strings.Repeat("c", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\u0000"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/\u0000"}]}`,
	"{\"event\":{\"scope\":\"repo.content\",\"action\":\"update\"},\"repo\":{\"type\":\"dataset\",\"name\":\"acme/\xff\xfe\"}}",
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\n"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x\u0085"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main\r\nX: 1"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"EVENT":{"scope":"repo"},"Repo":{"Name":"acme/y"}}`,
	`{"event":{"scope":"repo.content"},"event":{"action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":"repo.content.update","repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":1,"action":"update"},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":{"ref":"refs/heads/main"}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"updatedRefs":["refs/heads/main"]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"},"webhook":{"id":7}}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"[acme/x"}}`,
	`{"event":{"scope":"repo.content.","action":""},"repo":{"type":"dataset","name":"acme/x"}}`,
	`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/x"}} {}`,
	"\xef\xbb\xbf{}",
	`{"\u0065vent":{"scope":"repo.content","action":"update"},"REPO":{"type":"dataset","name":"acme/x"},"updatedRefs":[{"ref":"refs/heads/main"}],"updatedRefs":[{"newSha":"` + strings.Repeat("d", 40) + `"}]}`,
	`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"bucket","name":"acme/raw"},"updatedFiles":[{"path":"a\"]}","action":"add","size":1},{"path":"b","action":"delete"}],"updatedFilesTruncated":false}`,
}
