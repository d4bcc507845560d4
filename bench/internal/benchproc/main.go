// Command benchproc is the training command of the benchmark's mappings, and the same command run directly for
// the limits measured beside them.
//
// Usage:
//
//	benchproc stamp DIR    write the time its main function started (Unix nanoseconds) to DIR/$RUN_ID, and exit
//	benchproc spew BYTES   write BYTES bytes of training-log lines to stdout, and exit
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	// Read the clock first: this is the command's first instruction as far as the benchmark is concerned.
	started := time.Now().UnixNano()
	if len(os.Args) != 3 {
		fail(fmt.Errorf("usage: benchproc stamp DIR | benchproc spew BYTES"))
	}
	var err error
	switch os.Args[1] {
	case "stamp":
		err = stamp(os.Args[2], started)
	case "spew":
		var n int64
		if n, err = strconv.ParseInt(os.Args[2], 10, 64); err == nil {
			err = spew(os.Stdout, n)
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "benchproc: %v\n", err)
	os.Exit(2)
}

// stamp writes started to dir/$RUN_ID, through a temporary file and a rename so that a reader never sees it
// half written.
func stamp(dir string, started int64) error {
	id := os.Getenv("RUN_ID")
	if id == "" {
		return fmt.Errorf("RUN_ID is not set")
	}
	tmp := filepath.Join(dir, "."+id+".tmp")
	if err := os.WriteFile(tmp, strconv.AppendInt(nil, started, 10), 0o644); err != nil {
		return fmt.Errorf("write stamp: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, id)); err != nil {
		return fmt.Errorf("publish stamp: %w", err)
	}
	return nil
}

// spew writes n bytes of lines like those of a training loop, each formatted on its own, through a 64 KiB
// buffer. The last line is cut so that exactly n bytes are written.
func spew(f *os.File, n int64) error {
	w := bufio.NewWriterSize(f, 64<<10)
	line := make([]byte, 0, 128)
	for step := int64(1); n > 0; step++ {
		line = append(line[:0], "step "...)
		line = strconv.AppendInt(line, step, 10)
		line = append(line, " loss="...)
		line = strconv.AppendFloat(line, 1/float64(step+1), 'f', 6, 64)
		line = append(line, " lr=0.000300 tokens_per_s="...)
		line = strconv.AppendInt(line, 40000+step%9973, 10)
		line = append(line, " grad_norm="...)
		line = strconv.AppendFloat(line, float64(step%1000)/997, 'f', 4, 64)
		line = append(line, '\n')
		if int64(len(line)) > n {
			line = line[:n]
		}
		if _, err := w.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		n -= int64(len(line))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
