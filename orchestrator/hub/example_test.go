package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// fakeHub stands in for the Hub: it answers GET /api/datasets/acme/support-tickets/refs, and 404 otherwise.
func fakeHub() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/datasets/acme/support-tickets/refs" {
			http.Error(w, `{"error":"Repository not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{
			"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"}],
			"tags": [{"name": "v1.0", "ref": "refs/tags/v1.0", "targetCommit": "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"}],
			"converts": [{"name": "parquet", "ref": "refs/convert/parquet", "targetCommit": "2b04cb882b107dd808e084c70c08383fa2f342f4"}]
		}`)
	}))
}

func ExampleClient_DatasetRefs() {
	server := fakeHub()
	defer server.Close()
	// hub.New("", token) asks https://huggingface.co; the token is needed for private datasets only.
	client := hub.New(server.URL, "")

	refs, err := client.DatasetRefs(context.Background(), "acme/support-tickets")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range refs.All() {
		fmt.Printf("%s %.12s\n", r.Ref, r.TargetCommit)
	}

	// Any answer but 200 is a *StatusError.
	_, err = client.DatasetRefs(context.Background(), "acme/missing")
	if statusErr, ok := errors.AsType[*hub.StatusError](err); ok {
		fmt.Println(statusErr.Status, statusErr.Body)
	}
	// Output:
	// refs/heads/main 8d2f4a6c8e0b
	// refs/tags/v1.0 3c8e0a1f5b7d
	// refs/convert/parquet 2b04cb882b10
	// 404 {"error":"Repository not found"}
}

func ExampleClient_RefHead() {
	server := fakeHub()
	defer server.Close()
	client := hub.New(server.URL, "")

	for _, ref := range []string{"refs/heads/main", "refs/heads/gone"} {
		head, err := client.RefHead(context.Background(), "acme/support-tickets", ref)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s: %q\n", ref, head)
	}
	// Output:
	// refs/heads/main: "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"
	// refs/heads/gone: ""
}

func ExampleParsePayload() {
	p, err := hub.ParsePayload([]byte(`{"event": {"action": "update", "scope": "repo.content"},
		"repo": {"type": "dataset", "name": "acme/support-tickets", "private": false},
		"updatedRefs": [{"ref": "refs/heads/main", "oldSha": null, "newSha": "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"}]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*p.Event.Scope, *p.Repo.Type, *p.Repo.Name, hub.Value(p.Repo.ID) == "")
	for _, r := range p.UpdatedRefs {
		fmt.Println(*r.Ref, r.OldSha == nil, hub.Value(r.NewSha))
	}

	_, err = hub.ParsePayload([]byte(`{"event": {"scope": 7}}`))
	fmt.Println(err)
	// Output:
	// repo.content dataset acme/support-tickets true
	// refs/heads/main true 8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f
	// invalid payload: field "event.scope" must be a string, not number
}

func ExampleDatasetUpdate() {
	p := hub.DatasetUpdate("acme/support-tickets", "66a1f0c2b9e4d3a1f2c3d4e5",
		hub.NewUpdatedRef("refs/heads/main", "", "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"))
	body, err := json.Marshal(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(body))
	// Output:
	// {"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,"newSha":"8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"}]}
}
