package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is the unit of the times in /proc/<pid>/stat (USER_HZ), 100 on every Linux platform Go supports.
const clockTicks = 100

// cpuUse is CPU time consumed so far by this process and by the PostgreSQL server.
type cpuUse struct {
	self     time.Duration // this process: load generator, server, workers
	children time.Duration // the commands this process ran and waited for
	postgres time.Duration // the postmaster, its live children, and the children it has reaped
}

// cpuNow reads the CPU time of this process and of the cluster whose data directory is dataDir. The
// PostgreSQL part is zero when it cannot be read.
func cpuNow(dataDir string) cpuUse {
	var u cpuUse
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		u.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err == nil {
		u.children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	pid, err := postmasterPID(dataDir)
	if err != nil {
		return u
	}
	ticks, err := procTicks(pid, true)
	if err != nil {
		return u
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := procPPID(child); err == nil && ppid == pid {
			t, _ := procTicks(child, false)
			ticks += t
		}
	}
	u.postgres = time.Duration(ticks) * time.Second / clockTicks
	return u
}

// sub returns the CPU time used between earlier and u.
func (u cpuUse) sub(earlier cpuUse) cpuUse {
	return cpuUse{self: u.self - earlier.self, children: u.children - earlier.children, postgres: u.postgres - earlier.postgres}
}

// add returns the CPU time of u and other together.
func (u cpuUse) add(other cpuUse) cpuUse {
	return cpuUse{self: u.self + other.self, children: u.children + other.children, postgres: u.postgres + other.postgres}
}

// perOp returns the CPU time per operation, in microseconds, for the report's details.
func (u cpuUse) perOp(n int) map[string]float64 {
	if n == 0 {
		return nil
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	m := map[string]float64{"bench_process_us": per(u.self), "postgres_us": per(u.postgres)}
	if u.children > 0 {
		m["commands_us"] = per(u.children)
	}
	return m
}

// postmasterPID reads the server's pid from its postmaster.pid file.
func postmasterPID(dataDir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// procStatFields returns the fields of /proc/<pid>/stat after the command name.
func procStatFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(s[i+1:]), nil
}

// procPPID returns the parent of process pid.
func procPPID(pid int) (int, error) {
	f, err := procStatFields(pid)
	if err != nil || len(f) < 2 {
		return 0, fmt.Errorf("read parent of %d: %w", pid, err)
	}
	return strconv.Atoi(f[1])
}

// procTicks returns utime+stime of process pid, plus those of its reaped children when children is set.
func procTicks(pid int, children bool) (int64, error) {
	f, err := procStatFields(pid)
	if err != nil || len(f) < 15 {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	// Fields 14 to 17 of stat (utime, stime, cutime, cstime) are 11 to 14 here, counting from state at 0.
	n := 2
	if children {
		n = 4
	}
	var total int64
	for _, s := range f[11 : 11+n] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
		}
		total += v
	}
	return total, nil
}
