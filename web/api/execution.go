package api

import (
	"fmt"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Execution is an attempt's run on an external executor (a Hugging Face Job) as the API shows it: the record,
// and the times and cost worked out for people. WaitingSeconds is how long the Job waited for its hardware,
// RunningSeconds how long it has run; Cost is the estimated cost in dollars, such as "$0.42".
type Execution struct {
	orchestrator.AttemptExecution
	WaitingForHardware bool    `json:"waiting_for_hardware"`
	WaitingSeconds     float64 `json:"waiting_seconds"`
	RunningSeconds     float64 `json:"running_seconds"`
	Cost               string  `json:"cost"`
}

// NewExecution returns e as the API shows it, its open times counted up to now.
func NewExecution(e orchestrator.AttemptExecution, now time.Time) Execution {
	return Execution{
		AttemptExecution:   e,
		WaitingForHardware: e.WaitingForHardware(),
		WaitingSeconds:     e.WaitingTime(now).Round(time.Second).Seconds(),
		RunningSeconds:     e.RunningTime(now).Round(time.Second).Seconds(),
		Cost:               Dollars(e.CostMicroUSD),
	}
}

// NewExecutions returns the executions as the API shows them; none make an empty list, not null.
func NewExecutions(list []orchestrator.AttemptExecution, now time.Time) []Execution {
	out := make([]Execution, len(list))
	for i, e := range list {
		out[i] = NewExecution(e, now)
	}
	return out
}

// Dollars writes an amount of micro-USD as dollars and cents, rounded to the nearest cent: "$0.42". An amount
// above 0 that rounds to nothing is "<$0.01", so that a cost is never shown as free.
func Dollars(microUSD int64) string {
	if microUSD > 0 && microUSD < 5000 {
		return "<$0.01"
	}
	sign := ""
	if microUSD < 0 {
		sign, microUSD = "-", -microUSD
	}
	cents := (microUSD + 5000) / 10000
	return fmt.Sprintf("%s$%d.%02d", sign, cents/100, cents%100)
}
