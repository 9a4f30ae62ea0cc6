package schemas

// The goavro reference codec (native.go), for the tests that hold the
// hand-written one (fast.go) against it.
var (
	GoavroEncodeRequest  = goavroEncodeRequest
	GoavroDecodeRequest  = goavroDecodeRequest
	GoavroEncodeTask     = goavroEncodeTask
	GoavroDecodeTask     = goavroDecodeTask
	GoavroEncodeManifest = goavroEncodeManifest
	GoavroDecodeManifest = goavroDecodeManifest
	GoavroEncodeResult   = goavroEncodeResult
	GoavroDecodeResult   = goavroDecodeResult
	GoavroEncodeReply    = goavroEncodeReply
	GoavroDecodeReply    = goavroDecodeReply
)
