// Command dsr_extract answers one data-subject request with dsr-connector, from Go (grpc-go).
//
//	examples/go/build.sh /tmp/dsr_extract   # generates the stubs from proto/, then go build
//	/tmp/dsr_extract --addr 127.0.0.1:50051 --source demo \
//	    --kind email --value alice@example.com --out alice-go
//
// What an orchestrator should do, shown end to end:
//   - stubs generated from proto/ with protoc-gen-go and protoc-gen-go-grpc at build time, into
//     a temporary GOPATH (build.sh; nothing generated is kept in the repository);
//   - a deadline on every call, x-request-id, and a bearer token when --token-env names one;
//   - the documented statuses: UNAVAILABLE is retried with backoff (at least as long as the
//     server's grpc-retry-pushback-ms asks); every other error stops, with what to do about it;
//   - the data package: one JSON-lines file per table, manifest.json and README.txt, written to
//     a temporary directory and renamed into place only once the manifest has arrived.
//
// Flags: --addr host:port, --source, --kind, --value (or --value-env NAME), --out DIR,
// --token-env NAME, --request-id (default go-<uuid>), --compliance-tag, --deadline (90s, 10m;
// retries included, default 10m) and --attempts (default 5).
//
// Exit status: 0 written; 2 bad request or caller (fix and resend); 3 the service cannot answer
// as configured (schema drift); 4 the answer cannot be trusted (DATA_LOSS): escalate; 5 gave up
// after retries or the deadline; 1 anything else; 130 interrupted. Bad flags exit with 2.
//
// Build requirements (Debian/Ubuntu, no module proxy needed): golang-go, protobuf-compiler,
// libprotobuf-dev, protoc-gen-go, protoc-gen-go-grpc, golang-google-grpc-dev and
// golang-github-golang-protobuf-1-5-dev; scripts/prereqs.sh --clients installs them.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dsrv1 "dsrconnector/gen/dsr/v1"
)

// stop says what each status means for the caller: the exit status and the advice.
// UNAVAILABLE is retried first.
var stop = map[codes.Code]struct {
	exit   int
	advice string
}{
	codes.InvalidArgument:    {2, "the request is malformed; fix it"},
	codes.NotFound:           {2, "unknown source or table"},
	codes.Unauthenticated:    {2, "no valid bearer token (see --token-env)"},
	codes.PermissionDenied:   {2, "this caller may not read this source"},
	codes.FailedPrecondition: {3, "the live schema no longer matches the data map"},
	codes.DataLoss:           {4, "counts did not verify: discard everything and escalate"},
	codes.DeadlineExceeded:   {5, "the deadline passed; raise --deadline"},
	codes.ResourceExhausted:  {5, "the service is busy or a row is too large"},
	codes.Unavailable:        {5, "still unavailable after every attempt; try later"},
}

// codeNames are the canonical status names, as gRPC documents them (grpc-go's Code.String
// spells them in CamelCase).
var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return fmt.Sprintf("CODE(%d)", uint32(c))
}

// optionalString is a string flag that knows whether it was given at all.
type optionalString struct {
	value string
	set   bool
}

func (s *optionalString) String() string { return s.value }
func (s *optionalString) Set(v string) error {
	s.value, s.set = v, true
	return nil
}

// seconds is a --deadline: "90", "90s", "500ms", "10m" or "1h".
type seconds struct{ d time.Duration }

var durationText = regexp.MustCompile(`^(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)?$`)

func (s *seconds) String() string { return s.d.String() }
func (s *seconds) Set(text string) error {
	m := durationText.FindStringSubmatch(text)
	if m == nil {
		return fmt.Errorf("'%s' is not a duration like 90s or 10m", text)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return err
	}
	scale := map[string]float64{"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600}[m[2]]
	s.d = time.Duration(n * scale * float64(time.Second))
	return nil
}

type options struct {
	addr, source, kind, out  string
	value                    optionalString
	valueEnv, tokenEnv       string
	requestID, complianceTag string
	deadline                 seconds
	attempts                 int
}

func parseFlags() *options {
	o := &options{deadline: seconds{10 * time.Minute}}
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Answer one data-subject request with dsr-connector, from Go (grpc-go).\n\n"+
			"usage: %s --addr HOST:PORT --source NAME --kind KIND (--value V | --value-env NAME) --out DIR [flags]\n\n", os.Args[0])
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "", "host:port of dsr-connector")
	fs.StringVar(&o.source, "source", "", "the source to read (required)")
	fs.StringVar(&o.kind, "kind", "", "the identity kind, for example email (required)")
	fs.Var(&o.value, "value", "the identity value (or --value-env)")
	fs.StringVar(&o.valueEnv, "value-env", "", "environment variable holding the identity value")
	fs.StringVar(&o.out, "out", "", "the package directory to create")
	fs.StringVar(&o.tokenEnv, "token-env", "", "environment variable holding the bearer token")
	fs.StringVar(&o.requestID, "request-id", "go-"+uuid4(), "the orchestrator's request id")
	fs.StringVar(&o.complianceTag, "compliance-tag", "", "copied into the manifest")
	fs.Var(&o.deadline, "deadline", "how long the request may take, retries included (90s, 10m)")
	fs.IntVar(&o.attempts, "attempts", 5, "attempts while the service is UNAVAILABLE")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		usageError(fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	for _, required := range []struct{ name, value string }{
		{"addr", o.addr}, {"source", o.source}, {"kind", o.kind}, {"out", o.out},
	} {
		if required.value == "" {
			usageError(fs, "--"+required.name+" is required")
		}
	}
	return o
}

func usageError(fs *flag.FlagSet, message string) {
	fmt.Fprintf(fs.Output(), "error: %s\n", message)
	fs.Usage()
	os.Exit(2)
}

// uuid4 is a random (version 4) UUID.
func uuid4() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// rpcError is a call that ended with a non-OK status, with the trailers the server sent.
type rpcError struct {
	status  *status.Status
	trailer metadata.MD
}

func (e *rpcError) Error() string { return e.status.Message() }

// extractOnce makes one Extract call and writes its package. The package is discarded unless
// the manifest arrived and agreed with the stream.
func extractOnce(ctx context.Context, client dsrv1.DsrConnectorServiceClient, o *options, value string,
	md metadata.MD, deadline time.Time) (*dsrv1.Manifest, error) {
	pkg, err := newPackage(o.out)
	if err != nil {
		return nil, err
	}
	manifest, err := stream(ctx, client, pkg, o, value, md, deadline)
	if err != nil {
		pkg.discard()
		return nil, err
	}
	return manifest, nil
}

func stream(ctx context.Context, client dsrv1.DsrConnectorServiceClient, pkg *pkg, o *options, value string,
	md metadata.MD, deadline time.Time) (*dsrv1.Manifest, error) {
	ctx, cancel := context.WithDeadline(metadata.NewOutgoingContext(ctx, md), deadline)
	defer cancel() // also ends the call once the manifest is in
	call, err := client.Extract(ctx, &dsrv1.ExtractRequest{
		Source:        o.source,
		Subject:       &dsrv1.Identity{Kind: o.kind, Value: value},
		RequestId:     o.requestID,
		ComplianceTag: o.complianceTag,
	})
	if err != nil {
		return nil, &rpcError{status: status.Convert(err)}
	}
	for {
		message, err := call.Recv()
		if err == io.EOF {
			return nil, errors.New("the stream ended without a manifest")
		}
		if err != nil {
			return nil, &rpcError{status: status.Convert(err), trailer: call.Trailer()}
		}
		switch event := message.Event.(type) {
		case *dsrv1.ExtractResponse_Started:
			err = pkg.start(event.Started)
		case *dsrv1.ExtractResponse_Batch:
			err = pkg.batch(event.Batch)
		case *dsrv1.ExtractResponse_TableCompleted:
			err = pkg.completed(event.TableCompleted)
		case *dsrv1.ExtractResponse_Manifest:
			if err = pkg.finish(event.Manifest); err != nil {
				return nil, err
			}
			return event.Manifest, nil
		default: // table_started: progress, not needed here
		}
		if err != nil {
			return nil, err
		}
	}
}

func main() {
	os.Exit(run())
}

func run() int {
	o := parseFlags()
	value := o.value.value
	if !o.value.set && o.valueEnv != "" {
		value = os.Getenv(o.valueEnv)
	}
	if value == "" {
		fmt.Fprintln(os.Stderr, "error: give the identity with --value or --value-env")
		return 1
	}
	md := metadata.Pairs("x-request-id", o.requestID)
	if o.tokenEnv != "" {
		token, ok := os.LookupEnv(o.tokenEnv)
		if !ok {
			fmt.Fprintf(os.Stderr, "error: --token-env names %s, which is not set\n", o.tokenEnv)
			return 1
		}
		md.Set("authorization", "Bearer "+token)
	}

	// Ctrl-C or SIGTERM cancels the call, so that the partial package is removed.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	conn, err := grpc.Dial(o.addr, grpc.WithInsecure())
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	defer conn.Close()
	client := dsrv1.NewDsrConnectorServiceClient(conn)

	deadline := time.Now().Add(o.deadline.d)
	jitter := mrand.New(mrand.NewSource(time.Now().UnixNano()))
	delay := 0.5 // seconds
	for attempt := 1; attempt <= o.attempts; attempt++ {
		manifest, err := extractOnce(ctx, client, o, value, md, deadline)
		if err == nil {
			fmt.Printf("%s: %d row(s), every count verified (extraction %s)\n",
				o.out, manifest.GetRowCount(), manifest.GetExtractionId())
			return 0
		}
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "error: interrupted; nothing was written")
			return 130
		}
		var failed *rpcError
		if !errors.As(err, &failed) {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			return 1
		}
		code := failed.status.Code()
		if code == codes.Unavailable && attempt < o.attempts {
			wait := delay
			if pushback := failed.trailer.Get("grpc-retry-pushback-ms"); len(pushback) > 0 {
				if ms, err := strconv.Atoi(pushback[0]); err == nil {
					wait = math.Max(wait, float64(ms)/1000)
				}
			}
			wait *= 1 + jitter.Float64()/4 // jitter, so callers do not retry in step
			pause := time.Duration(wait * float64(time.Second))
			if time.Now().Add(pause).Before(deadline) {
				fmt.Fprintf(os.Stderr, "attempt %d: UNAVAILABLE (%s); again in %.1fs\n",
					attempt, failed.status.Message(), wait)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
					fmt.Fprintln(os.Stderr, "error: interrupted; nothing was written")
					return 130
				}
				delay = math.Min(delay*2, 30)
				continue
			}
		}
		s, ok := stop[code]
		if !ok {
			s.exit, s.advice = 1, "unexpected"
		}
		fmt.Fprintf(os.Stderr, "error: %s: %s (%s); nothing was written\n",
			codeName(code), failed.status.Message(), s.advice)
		return s.exit
	}
	return 5
}
