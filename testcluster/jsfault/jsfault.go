// Package jsfault gives tests a JetStream client, on a real NATS server,
// under which a stream goes away while a reader is midway through it: the
// fault that made one-shot readers on ordered consumers hang for ever
// (nats.go v1.55 recreates an ordered consumer without limit, heeding no
// context, unless its resets are capped). It imports nothing of rvpd's,
// so that the tests of every package can use it.
package jsfault

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// DeletingJetStream is a JetStream client whose ordered consumers on
// StreamName delete it just before their read number At+1: a Next, Fetch,
// FetchNoWait, or a Next of a Messages iterator, counted together.
type DeletingJetStream struct {
	jetstream.JetStream
	StreamName string
	At         int

	once    sync.Once
	deleted error
}

// Deleted returns the error of the deletion, if one was made and failed.
// Read it once the reader has returned.
func (d *DeletingJetStream) Deleted() error { return d.deleted }

// OrderedConsumer returns the ordered consumer asked for, counting the
// reads of one on StreamName.
func (d *DeletingJetStream) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := d.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil || stream != d.StreamName {
		return c, err
	}
	return &consumer{Consumer: c, js: d}, nil
}

type consumer struct {
	jetstream.Consumer
	js    *DeletingJetStream
	reads int
}

// read counts a read, and deletes the stream before read number At+1.
func (c *consumer) read() {
	if c.reads++; c.reads > c.js.At {
		c.js.once.Do(func() { c.js.deleted = c.js.JetStream.DeleteStream(context.Background(), c.js.StreamName) })
	}
}

func (c *consumer) Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
	c.read()
	return c.Consumer.Next(opts...)
}

func (c *consumer) Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.read()
	return c.Consumer.Fetch(batch, opts...)
}

func (c *consumer) FetchNoWait(batch int) (jetstream.MessageBatch, error) {
	c.read()
	return c.Consumer.FetchNoWait(batch)
}

func (c *consumer) Messages(opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	it, err := c.Consumer.Messages(opts...)
	if err != nil {
		return nil, err
	}
	return &iterator{MessagesContext: it, c: c}, nil
}

type iterator struct {
	jetstream.MessagesContext
	c *consumer
}

func (it *iterator) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	it.c.read()
	return it.MessagesContext.Next(opts...)
}
