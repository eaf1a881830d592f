package gateway

// BlockMessage exposes blockMessage to the tests.
var BlockMessage = blockMessage
