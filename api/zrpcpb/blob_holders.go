package zrpcpb

// HolderRef returns the value a BlobBlock's holders use for node: 1 + its
// index in b.Nodes, adding node to b.Nodes when it is not there yet.
func (b *Blob) HolderRef(node string) uint32 {
	for i, n := range b.Nodes {
		if n == node {
			return uint32(i + 1)
		}
	}
	b.Nodes = append(b.Nodes, node)
	return uint32(len(b.Nodes))
}

// Holder returns the agent holding shard index of blk, a block of b, or ""
// when the shard is missing (or the holder value is out of range).
func (b *Blob) Holder(blk *BlobBlock, index int) string {
	if index < 0 || index >= len(blk.GetHolders()) {
		return ""
	}
	h := blk.Holders[index]
	if h == 0 || int(h) > len(b.Nodes) {
		return ""
	}
	return b.Nodes[h-1]
}
