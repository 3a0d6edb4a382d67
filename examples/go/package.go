// The data package: one JSON-lines file per table, manifest.json and README.txt, written to a
// private temporary directory beside the destination and renamed into place only once the
// manifest has arrived and agrees with the stream.

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	dsrv1 "dsrconnector/gen/dsr/v1"
)

// pkg is a data package being written.
type pkg struct {
	out     string
	dir     string
	started *dsrv1.ExtractionStarted
	tables  map[string]*tableFile
}

// tableFile is one table's file and the rows written to it.
type tableFile struct {
	name    string // the file's name in the package
	columns []*dsrv1.ColumnDescriptor
	file    *os.File
	writer  *bufio.Writer
	rows    uint64
	done    bool
	// completed is the table's completion, once it came.
	completed *dsrv1.TableCompleted
}

// newPackage starts a package that will be `out`. Refuses when `out` exists.
func newPackage(out string) (*pkg, error) {
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("%s already exists; choose a new directory", out)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	// Beside the destination, so that the final rename stays on one file system. MkdirTemp
	// makes it private to the user (0700): it holds personal data.
	dir, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-")
	if err != nil {
		return nil, err
	}
	return &pkg{out: out, dir: dir, tables: map[string]*tableFile{}}, nil
}

// start creates one file per planned table, so that a table without rows has an empty file.
func (p *pkg) start(started *dsrv1.ExtractionStarted) error {
	if p.started != nil {
		return fmt.Errorf("a second `started` event")
	}
	p.started = started
	used := map[string]bool{}
	for _, t := range started.GetTables() {
		name := fileName(t.GetTable(), used)
		f, err := os.OpenFile(filepath.Join(p.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		p.tables[t.GetTable()] = &tableFile{
			name: name, columns: t.GetColumns(), file: f, writer: bufio.NewWriterSize(f, 256*1024),
		}
	}
	return nil
}

// fileName is a table's file name: the table name where it is a plain name, with anything
// else replaced, so that no name from the server reaches outside the package.
func fileName(table string, used map[string]bool) string {
	var b strings.Builder
	n := 0
	for _, c := range table {
		if n == 100 {
			break
		}
		n++
		if c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c) || strings.ContainsRune("_-.", c)) {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	base := b.String()
	if base == "" || strings.HasPrefix(base, ".") {
		base = "_" + base
	}
	name := base + ".jsonl"
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s-%d.jsonl", base, i)
	}
	used[name] = true
	return name
}

func (p *pkg) table(name string) (*tableFile, error) {
	t, ok := p.tables[name]
	if !ok {
		return nil, fmt.Errorf("the stream sent table '%s', which is not in the plan", name)
	}
	return t, nil
}

// batch writes a batch's rows to its table's file, one JSON object per line.
func (p *pkg) batch(batch *dsrv1.RowBatch) error {
	t, err := p.table(batch.GetTable())
	if err != nil {
		return err
	}
	if t.done {
		return fmt.Errorf("rows for table '%s' after its completion", batch.GetTable())
	}
	var line []byte
	for _, row := range batch.GetRows() {
		if line, err = appendRow(line[:0], t.columns, row); err != nil {
			return fmt.Errorf("table '%s', row %d: %w", batch.GetTable(), t.rows, err)
		}
		line = append(line, '\n')
		if _, err := t.writer.Write(line); err != nil {
			return err
		}
		t.rows++
	}
	return nil
}

// completed checks a table's count against the rows received, and puts its file on disk.
func (p *pkg) completed(done *dsrv1.TableCompleted) error {
	t, err := p.table(done.GetTable())
	if err != nil {
		return err
	}
	if t.done {
		return fmt.Errorf("table '%s' completed twice", done.GetTable())
	}
	if done.GetRowCount() != t.rows {
		return fmt.Errorf("%s: %d rows received, the server says %d", done.GetTable(), t.rows, done.GetRowCount())
	}
	if err := t.writer.Flush(); err != nil {
		return err
	}
	if err := t.file.Sync(); err != nil {
		return err
	}
	if err := t.file.Close(); err != nil {
		return err
	}
	t.done = true
	t.completed = done
	leftOut := ""
	if done.GetRejectedCount() > 0 {
		leftOut = fmt.Sprintf(" (%d left out)", done.GetRejectedCount())
	}
	fmt.Fprintf(os.Stderr, "%s: %d row(s)%s, count verified\n", done.GetTable(), done.GetRowCount(), leftOut)
	return nil
}

// finish checks the manifest against the stream, writes manifest.json and README.txt, and
// moves the package into place.
func (p *pkg) finish(m *dsrv1.Manifest) error {
	if p.started == nil {
		return fmt.Errorf("a manifest without a plan")
	}
	for _, c := range m.GetTables() {
		t, ok := p.tables[c.GetTable()]
		if !c.GetVerified() || !ok || c.GetRowCount() != t.rows {
			return fmt.Errorf("%s: the manifest does not match the stream", c.GetTable())
		}
	}
	manifest, err := manifestJSON(m)
	if err != nil {
		return err
	}
	if err := p.write("manifest.json", manifest); err != nil {
		return err
	}
	if err := p.write("README.txt", []byte(p.readme(m))); err != nil {
		return err
	}
	if _, err := os.Lstat(p.out); err == nil {
		return fmt.Errorf("%s appeared while the package was written; the package was not moved there", p.out)
	}
	return os.Rename(p.dir, p.out)
}

// readme is the package's explanation, for the data subject: the same text as every
// client's.
func (p *pkg) readme(m *dsrv1.Manifest) string {
	plural := func(n uint64, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	}
	source, kind := m.GetSource(), m.GetSubjectKind()
	at := m.GetExtractionTimestamp()
	out := []string{
		fmt.Sprintf("Your personal data from \"%s\"", source),
		strings.Repeat("=", 26+utf8.RuneCountInString(source)), "",
		fmt.Sprintf("This package holds every record about you that was found in \"%s\", looked up by", source),
		fmt.Sprintf("your %s. All of it was read from one consistent copy (snapshot) of the database, taken", kind),
		fmt.Sprintf("at %s. For each table, the number of records written here was checked", timestamp(at.GetSeconds(), at.GetNanos())),
		"against the database's own count in the same snapshot.", "",
		"Request:     " + m.GetRequestId(),
		"Extraction:  " + m.GetExtractionId(),
		"Reference:   " + m.GetSubjectId() + " (a keyed fingerprint of the identity you gave, not the identity itself)",
		"", "Files", "-----", "",
		"manifest.json",
		"    The verified record of this extraction: the tables, their record counts, the",
		"    fields searched and when. It is protobuf JSON (dsr.v1.Manifest).",
	}
	for _, planned := range p.started.GetTables() {
		t := p.tables[planned.GetTable()]
		described := ""
		if planned.GetDescription() != "" {
			described = " " + planned.GetDescription()
		}
		out = append(out, "", t.name,
			fmt.Sprintf("    Table \"%s\": %d record%s.%s", planned.GetTable(), t.rows, plural(t.rows, "", "s"), described),
			"    One record per line, as a JSON object with these fields:")
		width := 0
		for _, c := range planned.GetColumns() {
			if n := utf8.RuneCountInString(c.GetName()); n > width {
				width = n
			}
		}
		for _, c := range planned.GetColumns() {
			category := c.GetCategory()
			if category == "not_pii" {
				category = "not personal data on its own"
			}
			pad := strings.Repeat(" ", width-utf8.RuneCountInString(c.GetName()))
			out = append(out, fmt.Sprintf("      %s%s  %s", c.GetName(), pad, category))
		}
		if done := t.completed; done != nil && done.GetRejectedCount() > 0 {
			r := done.GetRejectedCount()
			out = append(out,
				fmt.Sprintf("    %d more record%s of this table could not be read as declared and %s not", r, plural(r, "", "s"), plural(r, "is", "are")),
				fmt.Sprintf("    included here; ask us about %s, quoting the extraction id above.", plural(r, "it", "them")))
		}
		if done := t.completed; done != nil && len(done.GetPiiFields()) > 0 {
			out = append(out, "    Inside its JSON fields we also found:")
			for _, field := range done.GetPiiFields() {
				where, category := field, ""
				if i := strings.LastIndex(field, ":"); i >= 0 {
					where, category = field[:i], field[i+1:]
				}
				out = append(out, fmt.Sprintf("      %s  %s", where, category))
			}
		}
	}
	if unreachable := p.started.GetUnreachableTables(); len(unreachable) > 0 {
		out = append(out, "", "Not searched", "------------", "",
			fmt.Sprintf("These tables cannot be reached from your %s, so they were not searched:", kind))
		for _, u := range unreachable {
			out = append(out, fmt.Sprintf("  %s: %s", u.GetTable(), u.GetReason()))
		}
	}
	out = append(out, "", "What the categories mean", "------------------------", "")
	described := map[string]string{}
	for _, c := range p.started.GetCategories() {
		described[c.GetName()] = c.GetDescription()
	}
	names := make([]string, 0, len(described))
	for name := range described {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "not_pii" {
			continue
		}
		description := described[name]
		if description == "" {
			description = "(no description given)"
		}
		out = append(out, fmt.Sprintf("  %s: %s", name, description))
	}
	out = append(out, "", "How values are written", "----------------------", "",
		"  Times are UTC, in ISO 8601 (2024-03-14T09:26:53Z); dates are YYYY-MM-DD.",
		"  Exact decimal numbers (amounts of money, for example) are text, so that no digit is",
		"  lost. Binary data is base64. Nested documents are JSON, as stored. A missing value",
		"  is null.")
	return strings.Join(out, "\n") + "\n"
}

// discard removes everything written so far.
func (p *pkg) discard() {
	for _, t := range p.tables {
		if !t.done {
			t.file.Close()
		}
	}
	os.RemoveAll(p.dir)
}

// write creates a file that only its owner can read.
func (p *pkg) write(name string, data []byte) error {
	f, err := os.OpenFile(filepath.Join(p.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// manifestJSON is the manifest in protobuf's canonical JSON form (lowerCamelCase names, 64-bit
// integers as strings, RFC 3339 times, unset fields left out), indented by two spaces and with
// non-ASCII characters escaped, as Python's json_format.MessageToJson writes it. protojson's
// own whitespace is deliberately unstable, so it is re-indented here.
func manifestJSON(m *dsrv1.Manifest) ([]byte, error) {
	compact, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, compact, "", "  "); err != nil {
		return nil, err
	}
	out := make([]byte, 0, indented.Len()+1)
	for _, r := range indented.String() {
		switch {
		case r < 0x80:
			out = append(out, byte(r))
		case r < 0x10000:
			out = append(out, fmt.Sprintf(`\u%04x`, r)...)
		default: // a surrogate pair
			r -= 0x10000
			out = append(out, fmt.Sprintf(`\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))...)
		}
	}
	return append(out, '\n'), nil
}
