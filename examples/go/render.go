// Rendering typed values as JSON: the same rendering as `dsr-connector extract` and the Python
// example. Numbers stay numbers, exact decimals and dates stay text, times are RFC 3339 in UTC,
// binary data is base64, and JSON columns are embedded as JSON with their digits as sent.

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	dsrv1 "dsrconnector/gen/dsr/v1"
)

// appendRow appends one row as a JSON object keyed by column name (no new line).
func appendRow(b []byte, columns []*dsrv1.ColumnDescriptor, row *dsrv1.Row) ([]byte, error) {
	values := row.GetValues()
	if len(values) != len(columns) {
		return b, fmt.Errorf("a row has %d values for %d columns", len(values), len(columns))
	}
	b = append(b, '{')
	for i, column := range columns {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, column.GetName())
		b = append(b, ':')
		b = appendValue(b, values[i])
	}
	return append(b, '}'), nil
}

// appendValue appends one typed value as JSON.
func appendValue(b []byte, value *dsrv1.Value) []byte {
	switch v := value.GetKind().(type) {
	case *dsrv1.Value_BoolValue:
		return strconv.AppendBool(b, v.BoolValue)
	case *dsrv1.Value_Int64Value:
		return strconv.AppendInt(b, v.Int64Value, 10)
	case *dsrv1.Value_DoubleValue:
		return appendDouble(b, v.DoubleValue)
	case *dsrv1.Value_StringValue:
		return appendString(b, v.StringValue)
	case *dsrv1.Value_DecimalValue:
		return appendString(b, v.DecimalValue)
	case *dsrv1.Value_DateValue:
		return appendString(b, v.DateValue)
	case *dsrv1.Value_TimestampText:
		return appendString(b, v.TimestampText)
	case *dsrv1.Value_BytesValue:
		return appendString(b, base64.StdEncoding.EncodeToString(v.BytesValue))
	case *dsrv1.Value_TimestampValue:
		return appendString(b, timestamp(v.TimestampValue.GetSeconds(), v.TimestampValue.GetNanos()))
	case *dsrv1.Value_JsonValue:
		// Embedded with its numbers' digits as sent (no float rounding), without the
		// whitespace between tokens. Text that is not JSON (which the server never sends) is
		// written as a string instead.
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(v.JsonValue)); err == nil {
			return append(b, compact.Bytes()...)
		}
		return appendString(b, v.JsonValue)
	default: // null_value, or no value at all
		return append(b, "null"...)
	}
}

// appendDouble writes a finite double as Python's repr does (the shortest text that reads
// back to the same number: 1250.5, 1.0, 1e-05, 1e+16), and NaN and the infinities as the
// strings protobuf's JSON mapping uses, since JSON has no such numbers.
func appendDouble(b []byte, d float64) []byte {
	switch {
	case math.IsNaN(d):
		return append(b, `"NaN"`...)
	case math.IsInf(d, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(d, -1):
		return append(b, `"-Infinity"`...)
	}
	// Shortest digits and the decimal exponent: "-1.2345e+06" -> "12345", 6.
	text := strconv.FormatFloat(d, 'e', -1, 64)
	if text[0] == '-' {
		b = append(b, '-')
		text = text[1:]
	}
	e := strings.IndexByte(text, 'e')
	digits := strings.Replace(text[:e], ".", "", 1)
	exp, _ := strconv.Atoi(text[e+1:])
	switch {
	case exp >= 16 || exp < -4:
		b = append(b, digits[0])
		if len(digits) > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		return append(b, fmt.Sprintf("e%+03d", exp)...)
	case exp >= 0:
		if len(digits) <= exp+1 {
			b = append(b, digits...)
			b = append(b, strings.Repeat("0", exp+1-len(digits))...)
			return append(b, ".0"...)
		}
		b = append(b, digits[:exp+1]...)
		b = append(b, '.')
		return append(b, digits[exp+1:]...)
	default:
		b = append(b, "0."...)
		b = append(b, strings.Repeat("0", -exp-1)...)
		return append(b, digits...)
	}
}

// appendString writes a JSON string with the escapes Python's json.dumps and serde_json use:
// quote, backslash and control characters; everything else as UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...) // never from protobuf, which checks UTF-8
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		default:
			if c < 0x20 {
				b = append(b, fmt.Sprintf(`\u%04x`, c)...)
			} else {
				b = append(b, c)
			}
		}
		i++
	}
	return append(b, '"')
}

// timestamp is protobuf's JSON form of a Timestamp: UTC, with 0, 3, 6 or 9 fraction digits.
func timestamp(seconds int64, nanos int32) string {
	base := time.Unix(seconds, 0).UTC().Format("2006-01-02T15:04:05")
	switch {
	case nanos == 0:
		return base + "Z"
	case nanos%1000000 == 0:
		return fmt.Sprintf("%s.%03dZ", base, nanos/1000000)
	case nanos%1000 == 0:
		return fmt.Sprintf("%s.%06dZ", base, nanos/1000)
	default:
		return fmt.Sprintf("%s.%09dZ", base, nanos)
	}
}
