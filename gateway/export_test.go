package gateway

// BlockMessage exposes blockMessage to the tests.
var BlockMessage = blockMessage

// PeekClientHello exposes peekClientHello to the fuzz target.
var PeekClientHello = peekClientHello

// Redacted exposes redacted to the tests.
var Redacted = redacted
