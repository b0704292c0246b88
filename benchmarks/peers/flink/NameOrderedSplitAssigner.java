package weir.peers;

import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.file.src.assigners.FileSplitAssigner;

import javax.annotation.Nullable;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.Optional;
import java.util.TreeSet;

/**
 * Hands out file splits in path order (then offset), one at a time to whichever reader asks.
 *
 * <p>Why: the bid files are in event-time order by name, and a reader's watermark only moves
 * forward. Flink's default assigner (LocalityAwareSplitAssigner) keeps the splits in a HashSet, so
 * a reader may take bids-00002 before bids-00000, and every row of the earlier file is then behind
 * the watermark and dropped as late. Reading in name order is what Weir's file source does too.
 */
public final class NameOrderedSplitAssigner implements FileSplitAssigner {

    /** The provider the FileSource builder takes (Serializable: it is shipped with the job). */
    public static final FileSplitAssigner.Provider PROVIDER = NameOrderedSplitAssigner::new;

    private static final Comparator<FileSourceSplit> ORDER =
            Comparator.comparing((FileSourceSplit s) -> s.path().toString())
                    .thenComparingLong(FileSourceSplit::offset)
                    .thenComparing(FileSourceSplit::splitId);

    private final TreeSet<FileSourceSplit> splits = new TreeSet<>(ORDER);

    public NameOrderedSplitAssigner(Collection<FileSourceSplit> splits) {
        this.splits.addAll(splits);
    }

    @Override
    public Optional<FileSourceSplit> getNext(@Nullable String hostname) {
        return Optional.ofNullable(splits.pollFirst());
    }

    @Override
    public void addSplits(Collection<FileSourceSplit> newSplits) {
        splits.addAll(newSplits);
    }

    @Override
    public Collection<FileSourceSplit> remainingSplits() {
        return new ArrayList<>(splits);
    }
}
