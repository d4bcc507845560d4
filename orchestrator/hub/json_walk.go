package hub

import (
	"bytes"
	"encoding/json"
)

// eachMember and eachElement find the members of an object and the elements of an array without decoding
// them: they only look for where each value ends, so that a parser can decode the few it reads and step over
// the rest. Their input must be valid JSON (json.Valid): they do not check it.

// eachMember calls fn with the raw key (quoted, as received) and the raw value of every member of the object
// that starts data, in order, until fn returns false.
func eachMember(data []byte, fn func(key, value []byte) bool) {
	i := skipSpace(data, skipSpace(data, 0)+1) // past the '{'
	for i < len(data) && data[i] != '}' {
		keyEnd := stringEnd(data, i)
		start := skipSpace(data, skipSpace(data, keyEnd)+1) // past the ':'
		end := valueEnd(data, start)
		if !fn(data[i:keyEnd], data[start:end]) {
			return
		}
		i = skipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
}

// eachElement calls fn with every element of the array that starts data, in order, until fn returns false.
func eachElement(data []byte, fn func(elem []byte) bool) {
	i := skipSpace(data, skipSpace(data, 0)+1) // past the '['
	for i < len(data) && data[i] != ']' {
		end := valueEnd(data, i)
		if !fn(data[i:end]) {
			return
		}
		i = skipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
}

// memberName returns the name a raw key stands for, unescaped.
func memberName(key []byte) []byte {
	if bytes.IndexByte(key, '\\') < 0 {
		return key[1 : len(key)-1]
	}
	var s string
	if json.Unmarshal(key, &s) != nil {
		return nil
	}
	return []byte(s)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string that starts at data[i].
func stringEnd(data []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			return len(data)
		}
		j += k
		// The quote ends the string unless an odd number of backslashes escapes it. The opening quote stops
		// the count.
		escapes := 0
		for b := j - 1; data[b] == '\\'; b-- {
			escapes++
		}
		if escapes%2 == 0 {
			return j + 1
		}
		j++
	}
}

// valueEnd returns the index just past the value that starts at data[i].
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = stringEnd(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for j < len(data) {
		switch data[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
		j++
	}
	return j
}
