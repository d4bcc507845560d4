package hub

import "strconv"

// What ShortenPayload keeps of a large body.
const (
	// shortValueMax is the largest top-level member a shortened payload keeps as received; a larger value is
	// replaced by a summary of it.
	shortValueMax = 4 << 10
	// shortHeadMax bounds the leading entries of a replaced array that its summary keeps.
	shortHeadMax = 2 << 10
	// shortTailMax is room kept for the member that counts what did not fit.
	shortTailMax = 128
)

// PayloadOmittedKey names the member of a shortened payload that counts the top-level members left out once
// its limit was reached.
const PayloadOmittedKey = "(omitted members)"

// ShortenPayload returns a shortened copy of obj, a valid JSON object (json.Valid), in at most limit bytes
// (limit is at least 8 KiB): its top-level members in order, each of up to 4 KiB as received, a larger one with
// its value replaced by a summary that says what it was: {"omitted": "array", "entries": 10000, "bytes":
// 1482000, "first": [...the leading entries that fit in 2 KiB...]} ("members" for an object, only "bytes" for a
// string, a number or a literal). Once limit is near, the members left (and a member whose key alone is too
// large) are counted under PayloadOmittedKey instead.
func ShortenPayload(obj []byte, limit int) []byte {
	out := make([]byte, 0, 8<<10)
	out = append(out, '{')
	var omitted, omittedBytes int
	eachMember(obj, func(key, value []byte) bool {
		sep := min(len(out)-1, 1) // the comma before every member but the first
		if omitted == 0 && len(key) <= shortValueMax {
			kept := value
			if len(key)+len(value) > shortValueMax {
				kept = summarize(value)
			}
			if len(out)+sep+len(key)+1+len(kept) <= limit-shortTailMax {
				out = appendMember(out, key, kept)
				return true
			}
		}
		omitted++
		omittedBytes += len(key) + len(value)
		return true
	})
	if omitted > 0 {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = strconv.AppendQuote(out, PayloadOmittedKey)
		out = append(out, `:{"members":`...)
		out = strconv.AppendInt(out, int64(omitted), 10)
		out = append(out, `,"bytes":`...)
		out = strconv.AppendInt(out, int64(omittedBytes), 10)
		out = append(out, '}')
	}
	return append(out, '}')
}

func appendMember(out, key, value []byte) []byte {
	if len(out) > 1 {
		out = append(out, ',')
	}
	out = append(out, key...)
	out = append(out, ':')
	return append(out, value...)
}

// summarize describes a JSON value that is too large to keep, keeping the leading entries of an array.
func summarize(value []byte) []byte {
	out := []byte(`{"omitted":`)
	switch value[0] {
	case '[':
		out = append(out, `"array","entries":`...)
		n, head, full := 0, []byte{'['}, false
		eachElement(value, func(elem []byte) bool {
			if !full && len(head)+len(elem)+2 <= shortHeadMax {
				if len(head) > 1 {
					head = append(head, ',')
				}
				head = append(head, elem...)
			} else {
				full = true
			}
			n++
			return true
		})
		out = strconv.AppendInt(out, int64(n), 10)
		out = append(out, `,"bytes":`...)
		out = strconv.AppendInt(out, int64(len(value)), 10)
		out = append(out, `,"first":`...)
		out = append(out, head...)
		return append(out, "]}"...)
	case '{':
		out = append(out, `"object","members":`...)
		n := 0
		eachMember(value, func(_, _ []byte) bool { n++; return true })
		out = strconv.AppendInt(out, int64(n), 10)
	case '"':
		out = append(out, `"string"`...)
	case 't', 'f', 'n':
		out = append(out, `"literal"`...)
	default:
		out = append(out, `"number"`...)
	}
	out = append(out, `,"bytes":`...)
	out = strconv.AppendInt(out, int64(len(value)), 10)
	return append(out, '}')
}
