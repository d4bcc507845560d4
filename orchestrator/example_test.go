package orchestrator_test

import (
	"fmt"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// body is a delivery of the Hub announcing, in one push to a dataset, a commit to main, a new tag, a deleted
// branch and a pull request's branch.
const body = `{
  "event": {"action": "update", "scope": "repo.content"},
  "repo": {
    "type": "dataset", "name": "acme/support-tickets", "id": "66a1f0c2b9e4d3a1f2c3d4e5", "private": false,
    "headSha": "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"
  },
  "updatedRefs": [
    {"ref": "refs/heads/main", "oldSha": "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f", "newSha": "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"},
    {"ref": "refs/tags/v3", "oldSha": null, "newSha": "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"},
    {"ref": "refs/heads/experiment", "oldSha": "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e", "newSha": null},
    {"ref": "refs/pr/4", "oldSha": null, "newSha": "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"}
  ],
  "webhook": {"id": "6650e8d1c2b3a4f5e6d7c8b9", "version": 3}
}`

func ExampleParseDelivery() {
	d, err := orchestrator.ParseDelivery([]byte(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Event(), d.RepoType, d.RepoName, d.MayTrigger())
	for _, r := range d.Refs {
		fmt.Printf("%s old=%.7s new=%.7s\n", r.Ref, r.OldSha, r.NewSha)
	}

	// A body the parser cannot read is an error with CodeInvalid, answered with 400.
	_, err = orchestrator.ParseDelivery([]byte(`{"event": {"scope": "repo.content", "action": "update"}}`))
	fmt.Println(orchestrator.ErrorCode(err), orchestrator.ErrorMessage(err))
	// Output:
	// repo.content.update dataset acme/support-tickets true
	// refs/heads/main old=8d2f4a6 new=e1a3c5e
	// refs/tags/v3 old= new=e1a3c5e
	// refs/heads/experiment old=3c8e0a1 new=
	// refs/pr/4 old= new=3c8e0a1
	// invalid invalid payload: missing repo.type, repo.name
}

func ExampleDecide() {
	d, err := orchestrator.ParseDelivery([]byte(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	mappings := []orchestrator.Mapping{
		orchestrator.Mapping{
			Name: "ticket-classifier", Dataset: "acme/support-tickets", Refs: []string{"refs/heads/*"},
			Command: []string{"python", "train.py"}, Enabled: true,
		}.WithDefaults(),
		orchestrator.Mapping{Name: "all-of-acme", Dataset: "acme/*", Command: []string{"true"}, Enabled: false}.WithDefaults(),
	}
	// One decision per (enabled mapping that wants the dataset, ref); the store turns a queued decision into a
	// run, or into a duplicate of the run the same revision already has.
	for _, dec := range orchestrator.Decide(d, mappings) {
		line := fmt.Sprintf("%s %s: %s", dec.MappingName, dec.Ref, dec.Decision)
		if dec.NewSha != "" {
			line += " " + dec.NewSha[:7]
		}
		if dec.Reason != "" {
			line += " (" + dec.Reason + ")"
		}
		fmt.Println(line)
	}
	// Output:
	// ticket-classifier refs/heads/main: queued e1a3c5e
	// ticket-classifier refs/tags/v3: ignored e1a3c5e (ref refs/tags/v3 is not watched (refs: refs/heads/*))
	// ticket-classifier refs/heads/experiment: ignored (ref deleted)
	// ticket-classifier refs/pr/4: ignored 3c8e0a1 (pull-request ref refs/pr/4)
}
