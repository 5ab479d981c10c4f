package snapshot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// testState is a state stream as the registry writes it: two services with
// three instances, a node, a blob of two blocks and an ACL token.
func testState(t testing.TB, rev uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(StateMagic)
	records := []proto.Message{
		&pb.SnapshotHeader{Format: 3, Revision: rev, Nodes: 1, Instances: 3, Blobs: 1, AclTokens: 1},
		&pb.Node{Name: "n1"},
		&pb.Instance{Service: "api", Id: "1"}, &pb.Instance{Service: "api", Id: "2"}, &pb.Instance{Service: "db", Id: "1"},
		&pb.SnapshotBlob{Blob: &pb.Blob{Name: "model", Id: "b1"}, Blocks: 2}, &pb.BlobBlock{}, &pb.BlobBlock{},
		&pb.ACLToken{AccessorId: "t1"},
	}
	for _, m := range records {
		if _, err := protodelim.MarshalTo(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// testFile is a snapshot file holding testState.
func testFile(t testing.TB) []byte {
	t.Helper()
	state := testState(t, 42)
	var b bytes.Buffer
	w, err := NewWriter(&b, Header{Index: 44, Term: 3, Revision: 42, Created: time.Unix(1700000000, 0), Size: uint64(len(state))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(state); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestInspectReportsHeaderAndCounts(t *testing.T) {
	file := testFile(t)
	info, err := Inspect(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := Info{
		Header:   Header{Format: FormatVersion, Index: 44, Term: 3, Revision: 42, Created: time.Unix(1700000000, 0).UTC(), Size: uint64(len(testState(t, 42)))},
		FileSize: uint64(len(file)), SHA256: info.SHA256, StateFormat: 3,
		Nodes: 1, Services: 2, Instances: 3, Blobs: 1, BlobBlocks: 2, ACLTokens: 1,
	}
	if *info != want {
		t.Fatalf("Inspect = %+v\nwant      %+v", *info, want)
	}
	if len(info.SHA256) != 64 {
		t.Fatalf("SHA256 %q is not a hex SHA-256", info.SHA256)
	}
}

func TestReaderHandsOverTheStateExactly(t *testing.T) {
	r, err := NewReader(bytes.NewReader(testFile(t)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testState(t, 42)) {
		t.Fatal("the state read back differs from the state written")
	}
	if r.Sum() == nil {
		t.Fatal("no SHA-256 after a complete read")
	}
}

// Every way a file can be damaged is refused, by Verify and by Inspect,
// with the error that names the damage.
func TestDamagedFilesAreRefused(t *testing.T) {
	good := testFile(t)
	future := bytes.Clone(good)
	future[len(magic)+1] = FormatVersion + 1
	cases := []struct {
		name string
		file []byte
		want error
		text string
	}{
		{"empty", nil, ErrTruncated, "shorter than"},
		{"wrong magic", append([]byte("ZRPCSNAq"), good[len(magic):]...), ErrNotSnapshot, `starts with "ZRPCSNAq"`},
		{"text file", []byte("hello\n"), ErrNotSnapshot, "not a zrpc snapshot"},
		{"future format", future, ErrFormat, "format 2"},
		{"truncated header", good[:HeaderSize-1], ErrTruncated, "header"},
		{"truncated state", good[:HeaderSize+10], ErrTruncated, "state ends"},
		{"truncated trailer", good[:len(good)-1], ErrTruncated, "trailer"},
		{"no trailer", good[:len(good)-TrailerSize], ErrTruncated, "trailer"},
		{"bytes after the trailer", append(bytes.Clone(good), 0), ErrChecksum, "follow"},
		{"flipped byte in the state", flip(good, HeaderSize+5), ErrChecksum, "SHA-256"},
		{"flipped byte in the trailer", flip(good, len(good)-1), ErrChecksum, "SHA-256"},
		{"flipped revision", flip(good, len(magic)+2+8+8+7), ErrChecksum, "SHA-256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Verify(bytes.NewReader(c.file))
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("Verify: %v, want %v mentioning %q", err, c.want, c.text)
			}
			if _, err := Inspect(bytes.NewReader(c.file)); !errors.Is(err, c.want) {
				t.Fatalf("Inspect: %v, want %v", err, c.want)
			}
		})
	}
}

// A flip of any one byte anywhere in the file is caught.
func TestEveryFlippedByteIsCaught(t *testing.T) {
	good := testFile(t)
	for i := range good {
		if _, _, err := Verify(bytes.NewReader(flip(good, i))); err == nil {
			t.Fatalf("a flipped byte at offset %d of %d passed Verify", i, len(good))
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

// A file whose hash is right but whose state does not have the records its
// header counts is refused by Inspect.
func TestInspectRefusesAStateShorterThanItsCounts(t *testing.T) {
	state := testState(t, 42)
	state = state[:len(state)-3] // part of the last record
	var b bytes.Buffer
	w, _ := NewWriter(&b, Header{Revision: 42, Size: uint64(len(state))})
	w.Write(state)
	w.Close()
	if _, _, err := Verify(bytes.NewReader(b.Bytes())); err != nil {
		t.Fatalf("Verify: %v (the file itself is intact)", err)
	}
	_, err := Inspect(bytes.NewReader(b.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "ACL token 1 of 1") {
		t.Fatalf("Inspect = %v, want the missing ACL token named", err)
	}
}

func TestInspectRefusesARevisionOtherThanTheHeaders(t *testing.T) {
	state := testState(t, 41)
	var b bytes.Buffer
	w, _ := NewWriter(&b, Header{Revision: 42, Size: uint64(len(state))})
	w.Write(state)
	w.Close()
	if _, err := Inspect(bytes.NewReader(b.Bytes())); err == nil || !strings.Contains(err.Error(), "revision 41") {
		t.Fatalf("Inspect = %v, want the mismatched revision named", err)
	}
}

func TestWriterRefusesAStateOfAnotherSize(t *testing.T) {
	var b bytes.Buffer
	w, _ := NewWriter(&b, Header{Size: 4})
	if _, err := w.Write([]byte("12345")); err == nil {
		t.Fatal("Write took more than the announced size")
	}
	w, _ = NewWriter(&b, Header{Size: 4})
	w.Write([]byte("123"))
	if err := w.Close(); err == nil {
		t.Fatal("Close accepted less than the announced size")
	}
}

func TestWriteFileRenamesOnlyAVerifiedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snap")
	file := testFile(t)
	write := func(w io.Writer) error { _, err := w.Write(file); return err }
	verify := func(tmp string) error { _, err := InspectFile(tmp); return err }

	refuse := func(string) error { return errors.New("scratch load failed") }
	if err := WriteFile(path, write, refuse); err == nil || !strings.Contains(err.Error(), "scratch load failed") {
		t.Fatalf("WriteFile with a failing verification = %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed write left %v behind", entries)
	}
	failWrite := func(w io.Writer) error { w.Write(file[:10]); return errors.New("stream broke") }
	if err := WriteFile(path, failWrite, verify); err == nil {
		t.Fatal("WriteFile of a broken stream succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed write left %v behind", entries)
	}

	if err := WriteFile(path, write, verify); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("the file at %s is not what was written (%v)", path, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %v, want only the snapshot", entries)
	}
}

// When the directory cannot be synced after the rename, the file is
// there, complete: the error says so (a *DirSyncError naming the file)
// rather than that nothing was written.
func TestWriteFileSaysTheFileIsThereWhenTheDirectorySyncFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snap")
	file := testFile(t)
	sync := syncDir
	t.Cleanup(func() { syncDir = sync })
	syncDir = func(string) error { return errors.New("input/output error") }

	err := WriteFile(path, func(w io.Writer) error { _, err := w.Write(file); return err },
		func(tmp string) error { _, err := InspectFile(tmp); return err })
	var ds *DirSyncError
	if !errors.As(err, &ds) || ds.Path != path || !strings.Contains(err.Error(), path+" is written, complete and verified") {
		t.Fatalf("WriteFile = %v, want a *DirSyncError saying %s is written", err, path)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("the file at %s is not what was written (%v)", path, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %v, want only the snapshot", entries)
	}
}
