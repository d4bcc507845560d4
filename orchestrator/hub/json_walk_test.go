package hub

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkWalk: the members eachMember finds in a JSON object, and the elements eachElement finds in every array
// member, are valid JSON values which, put back together, are the object again.
func checkWalk(t *testing.T, data []byte) {
	t.Helper()
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !json.Valid(trimmed) || trimmed[0] != '{' {
		return
	}
	var rebuilt []byte
	rebuilt = append(rebuilt, '{')
	eachMember(trimmed, func(key, value []byte) bool {
		require.True(t, json.Valid(key), "key %q", key)
		require.Equal(t, byte('"'), key[0], "key %q", key)
		require.True(t, json.Valid(value), "value %q", value)
		if len(rebuilt) > 1 {
			rebuilt = append(rebuilt, ',')
		}
		rebuilt = append(append(append(rebuilt, key...), ':'), value...)
		if value[0] == '[' {
			elems := []byte{'['}
			eachElement(value, func(elem []byte) bool {
				require.True(t, json.Valid(elem), "element %q", elem)
				if len(elems) > 1 {
					elems = append(elems, ',')
				}
				elems = append(elems, elem...)
				return true
			})
			require.Equal(t, compact(t, value), compact(t, append(elems, ']')))
		}
		return true
	})
	require.Equal(t, compact(t, trimmed), compact(t, append(rebuilt, '}')))
}

func compact(t *testing.T, data []byte) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Compact(&b, data))
	return b.String()
}

func TestJSONWalk(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{}`,
		` { } `,
		`{"a":1}`,
		"{\n\t\"a\" :\r\n 1 ,\n \"b\"\t:\t-2.5e+10 }\n",
		`{"a":[],"b":{},"c":[{}],"d":[[]],"e":""}`,
		`{"a":true,"b":false,"c":null,"d":0}`,
		`{"quote\"in key":"quote \" in value","backslash at end\\":"\\","escaped backslash then quote":"\\\"\\"}`,
		`{"brackets in strings":"]}[{","n":[1,"]",{"x":"}"}]}`,
		`{"unicode":"\u00e9\ud83d\ude00é","\u0065vent":{"scope":"repo"}}`,
		`{"dup":1,"dup":[1,2,3],"DUP":{"a":{"b":{"c":[[[]]]}}}}`,
		`{"updatedFiles":[ {"path":"a","size":1} , {"path":"b","action":"delete"} ],"x":[1 ,2, 3 ]}`,
	} {
		t.Run(body, func(t *testing.T) {
			t.Parallel()
			checkWalk(t, []byte(body))
		})
	}
	t.Run("Order", func(t *testing.T) {
		t.Parallel()
		var keys []string
		eachMember([]byte(`{"b":1,"a":{"z":2},"b":[3]}`), func(key, value []byte) bool {
			keys = append(keys, string(key)+"="+string(value))
			return true
		})
		require.Equal(t, []string{`"b"=1`, `"a"={"z":2}`, `"b"=[3]`}, keys)
	})
	t.Run("Stop", func(t *testing.T) {
		t.Parallel()
		n := 0
		eachElement([]byte(`[1,2,3,4]`), func([]byte) bool { n++; return n < 2 })
		require.Equal(t, 2, n)
	})
	t.Run("MemberName", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "event", string(memberName([]byte(`"event"`))))
		require.Equal(t, "event", string(memberName([]byte(`"\u0065vent"`))))
		require.Equal(t, `a"b`, string(memberName([]byte(`"a\"b"`))))
		require.Equal(t, strings.Repeat("x", 3), string(memberName([]byte(`"xxx"`))))
	})
}
